"""IEC 60870-5-101/104 code tables: type identifications, causes of transmission."""

from __future__ import annotations

# type id -> (mnemonic, snake_case name, element size in octets without the IOA)
TYPES: dict[int, tuple[str, str, int]] = {
    1: ("M_SP_NA_1", "single_point", 1),
    2: ("M_SP_TA_1", "single_point_with_time", 4),
    3: ("M_DP_NA_1", "double_point", 1),
    4: ("M_DP_TA_1", "double_point_with_time", 4),
    5: ("M_ST_NA_1", "step_position", 2),
    6: ("M_ST_TA_1", "step_position_with_time", 5),
    7: ("M_BO_NA_1", "bitstring", 5),
    8: ("M_BO_TA_1", "bitstring_with_time", 8),
    9: ("M_ME_NA_1", "measured_normalized", 3),
    10: ("M_ME_TA_1", "measured_normalized_with_time", 6),
    11: ("M_ME_NB_1", "measured_scaled", 3),
    12: ("M_ME_TB_1", "measured_scaled_with_time", 6),
    13: ("M_ME_NC_1", "measured_short_float", 5),
    14: ("M_ME_TC_1", "measured_short_float_with_time", 8),
    15: ("M_IT_NA_1", "integrated_totals", 5),
    16: ("M_IT_TA_1", "integrated_totals_with_time", 8),
    17: ("M_EP_TA_1", "protection_event_with_time", 6),
    18: ("M_EP_TB_1", "protection_start_events_with_time", 7),
    19: ("M_EP_TC_1", "protection_output_circuit_with_time", 7),
    20: ("M_PS_NA_1", "packed_single_points_with_change", 5),
    21: ("M_ME_ND_1", "measured_normalized_without_quality", 2),
    30: ("M_SP_TB_1", "single_point_with_cp56", 8),
    31: ("M_DP_TB_1", "double_point_with_cp56", 8),
    32: ("M_ST_TB_1", "step_position_with_cp56", 9),
    33: ("M_BO_TB_1", "bitstring_with_cp56", 12),
    34: ("M_ME_TD_1", "measured_normalized_with_cp56", 10),
    35: ("M_ME_TE_1", "measured_scaled_with_cp56", 10),
    36: ("M_ME_TF_1", "measured_short_float_with_cp56", 12),
    37: ("M_IT_TB_1", "integrated_totals_with_cp56", 12),
    38: ("M_EP_TD_1", "protection_event_with_cp56", 10),
    39: ("M_EP_TE_1", "protection_start_events_with_cp56", 11),
    40: ("M_EP_TF_1", "protection_output_circuit_with_cp56", 11),
    45: ("C_SC_NA_1", "single_command", 1),
    46: ("C_DC_NA_1", "double_command", 1),
    47: ("C_RC_NA_1", "regulating_step_command", 1),
    48: ("C_SE_NA_1", "set_point_normalized", 3),
    49: ("C_SE_NB_1", "set_point_scaled", 3),
    50: ("C_SE_NC_1", "set_point_short_float", 5),
    51: ("C_BO_NA_1", "bitstring_command", 4),
    58: ("C_SC_TA_1", "single_command_with_time", 8),
    59: ("C_DC_TA_1", "double_command_with_time", 8),
    60: ("C_RC_TA_1", "regulating_step_command_with_time", 8),
    61: ("C_SE_TA_1", "set_point_normalized_with_time", 10),
    62: ("C_SE_TB_1", "set_point_scaled_with_time", 10),
    63: ("C_SE_TC_1", "set_point_short_float_with_time", 12),
    64: ("C_BO_TA_1", "bitstring_command_with_time", 11),
    70: ("M_EI_NA_1", "end_of_initialization", 1),
    100: ("C_IC_NA_1", "interrogation", 1),
    101: ("C_CI_NA_1", "counter_interrogation", 1),
    102: ("C_RD_NA_1", "read", 0),
    103: ("C_CS_NA_1", "clock_synchronization", 7),
    104: ("C_TS_NA_1", "test", 2),
    105: ("C_RP_NA_1", "reset_process", 1),
    106: ("C_CD_NA_1", "delay_acquisition", 2),
    107: ("C_TS_TA_1", "test_with_time", 9),
    110: ("P_ME_NA_1", "parameter_normalized", 3),
    111: ("P_ME_NB_1", "parameter_scaled", 3),
    112: ("P_ME_NC_1", "parameter_short_float", 5),
    113: ("P_AC_NA_1", "parameter_activation", 1),
    120: ("F_FR_NA_1", "file_ready", 6),
    121: ("F_SR_NA_1", "section_ready", 7),
    122: ("F_SC_NA_1", "call_directory_select_file", 4),
    123: ("F_LS_NA_1", "last_section_segment", 5),
    124: ("F_AF_NA_1", "ack_file_section", 4),
    125: ("F_SG_NA_1", "segment", -1),  # variable: its length octet says
    126: ("F_DR_TA_1", "directory", 13),
    127: ("F_SC_NB_1", "query_log", 16),
}

COMMANDS = frozenset((45, 46, 47, 48, 49, 50, 51, 58, 59, 60, 61, 62, 63, 64))
# types whose activation is confirmed and, when executed, terminated (ACTTERM)
TERMINATED = COMMANDS | {100, 101}
SET_POINTS = frozenset((48, 49, 50, 61, 62, 63))

OPERATION: dict[int, str] = {
    **{t: "read" for t in TYPES if t < 45 or t == 70},
    45: "control",
    46: "control",
    47: "control",
    58: "control",
    59: "control",
    60: "control",
    **{t: "write" for t in (48, 49, 50, 51, 61, 62, 63, 64)},
    100: "read",
    101: "read",
    102: "read",
    103: "write",
    104: "diagnostic",
    105: "control",
    106: "diagnostic",
    107: "diagnostic",
    **{t: "write" for t in (110, 111, 112, 113)},
    **{t: "other" for t in range(120, 128)},
}

CAUSES: dict[int, str] = {
    1: "periodic",
    2: "background",
    3: "spontaneous",
    4: "initialized",
    5: "request",
    6: "activation",
    7: "activation_confirmation",
    8: "deactivation",
    9: "deactivation_confirmation",
    10: "activation_termination",
    11: "return_remote",
    12: "return_local",
    13: "file_transfer",
    **{
        20 + g: ("interrogated_station" if g == 0 else f"interrogated_group_{g}") for g in range(17)
    },
    37: "counter_request_general",
    38: "counter_request_group_1",
    39: "counter_request_group_2",
    40: "counter_request_group_3",
    41: "counter_request_group_4",
    44: "unknown_type",
    45: "unknown_cause",
    46: "unknown_common_address",
    47: "unknown_ioa",
}
ACT, ACTCON, DEACT, DEACTCON, ACTTERM = 6, 7, 8, 9, 10
NEGATIVE_CAUSES = frozenset((44, 45, 46, 47))  # the controlled station refuses

U_FUNCTIONS: dict[int, str] = {
    0x07: "startdt_act",
    0x0B: "startdt_con",
    0x13: "stopdt_act",
    0x23: "stopdt_con",
    0x43: "testfr_act",
    0x83: "testfr_con",
}

QUALITY = ((0x01, "overflow"), (0x10, "blocked"), (0x20, "substituted"), (0x40, "not_topical"), (0x80, "invalid"))  # fmt: skip
INITIALIZATION = {0: "local_power_on", 1: "local_manual_reset", 2: "remote_reset"}
RESET_PROCESS = {1: "general_reset", 2: "reset_event_buffer"}
