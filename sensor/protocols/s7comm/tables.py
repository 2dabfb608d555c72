"""S7comm and S7comm-plus code tables: names and ``ics.operation`` of functions, areas,
return codes, block types, userdata groups and subfunctions (tshark's names, snake_case)."""

from __future__ import annotations

PROTO_S7 = "s7comm"  # network.protocol of S7comm records (and of COTP and framing anomalies)
PROTO_PLUS = "s7comm-plus"

ROSCTR_NAMES = {1: "job", 2: "ack", 3: "ack_data", 7: "userdata"}

# Job functions: name, ics.operation.
JOB_FUNCTIONS: dict[int, tuple[str, str]] = {
    0x00: ("cpu_services", "other"),
    0xF0: ("setup_communication", "session"),
    0x04: ("read_var", "read"),
    0x05: ("write_var", "write"),
    0x1A: ("request_download", "program"),
    0x1B: ("download_block", "program"),
    0x1C: ("download_ended", "program"),
    0x1D: ("start_upload", "program"),
    0x1E: ("upload", "program"),
    0x1F: ("end_upload", "program"),
    0x28: ("plc_control", "control"),
    0x29: ("plc_stop", "control"),
}

AREA_NAMES = {
    0x01: "DR", 0x03: "SI", 0x05: "SF", 0x06: "AI", 0x07: "AQ", 0x1C: "C", 0x1D: "T",
    0x1E: "IEC-C", 0x1F: "IEC-T", 0x80: "P", 0x81: "I", 0x82: "Q", 0x83: "M", 0x84: "DB",
    0x85: "DI", 0x86: "L", 0x87: "V",
}  # fmt: skip

RETURN_CODES = {
    0x00: "reserved", 0x01: "hardware_error", 0x03: "access_denied", 0x05: "invalid_address",
    0x06: "data_type_not_supported", 0x07: "data_type_inconsistent", 0x0A: "object_does_not_exist",
    0xFF: "success",
}  # fmt: skip

ERROR_CLASSES = {
    0x00: "no_error", 0x81: "application_relationship", 0x82: "object_definition",
    0x83: "no_resources", 0x84: "service_processing", 0x85: "supplies", 0x87: "access_error",
}  # fmt: skip

BLOCK_TYPES = {
    "08": "OB",
    "0A": "DB",
    "0B": "SDB",
    "0C": "FC",
    "0D": "SFC",
    "0E": "FB",
    "0F": "SFB",
}

PI_OPERATIONS = {
    "_INSE": "insert-block", "_DELE": "delete-block", "_MODU": "copy-ram-to-rom",
    "_GARB": "compress-memory", "_N_LOGIN_": "login", "_N_LOGOUT": "logout",
}  # fmt: skip

USERDATA_TYPES = {
    0: "push",
    4: "request",
    8: "response",
    3: "nc_push",
    7: "nc_request",
    11: "nc_response",
}

# Userdata function groups: name, default ics.operation.
USERDATA_GROUPS: dict[int, tuple[str, str]] = {
    0: ("mode_transition", "diagnostic"),
    1: ("programmer_commands", "diagnostic"),
    2: ("cyclic_services", "read"),
    3: ("block_functions", "diagnostic"),
    4: ("cpu_functions", "diagnostic"),
    5: ("security", "session"),
    6: ("pbc", "other"),
    7: ("time_functions", "diagnostic"),
    15: ("nc_programming", "program"),
}

# (group, subfunction) -> name, ics.operation (None: the group's default).
USERDATA_SUBFUNCTIONS: dict[tuple[int, int], tuple[str, str | None]] = {
    (1, 1): ("block_status", None), (1, 2): ("variable_status", None),
    (1, 3): ("output_istack", None), (1, 4): ("output_bstack", None),
    (1, 5): ("output_lstack", None), (1, 6): ("time_measurement", None),
    (1, 7): ("force_selection", None), (1, 8): ("modify_variable", "write"),
    (1, 9): ("force", "write"), (1, 10): ("breakpoint", "control"),
    (1, 11): ("exit_hold", "control"), (1, 12): ("memory_reset", "control"),
    (1, 13): ("disable_job", None), (1, 14): ("enable_job", None), (1, 15): ("delete_job", None),
    (1, 16): ("read_job_list", None), (1, 17): ("read_job", None), (1, 18): ("replace_job", None),
    (1, 19): ("block_status_v2", None), (1, 22): ("flash_led", "control"),
    (2, 1): ("cyclic_transfer", None), (2, 4): ("unsubscribe", None),
    (2, 5): ("change_driven_transfer", None), (2, 7): ("change_driven_transfer_modify", None),
    (2, 8): ("rdrec", None),
    (3, 1): ("list_blocks", None), (3, 2): ("list_blocks_of_type", None),
    (3, 3): ("get_block_info", None),
    (4, 1): ("read_szl", None), (4, 2): ("message_service", None),
    (4, 3): ("diagnostic_message", None), (4, 5): ("alarm8_indication", None),
    (4, 6): ("notify_indication", None), (4, 7): ("alarm8_lock", "control"),
    (4, 8): ("alarm8_unlock", "control"), (4, 9): ("scan_indication", None),
    (4, 11): ("alarm_ack", "control"), (4, 12): ("alarm_ack_indication", None),
    (4, 13): ("alarm_lock_indication", None), (4, 14): ("alarm_unlock_indication", None),
    (4, 17): ("alarm_sq_indication", None), (4, 18): ("alarm_s_indication", None),
    (4, 19): ("alarm_query", None), (4, 22): ("notify8_indication", None),
    (5, 1): ("plc_password", None), (5, 2): ("clear_password", None),
    (6, 1): ("bsend_brecv", None),
    (7, 1): ("read_clock", None), (7, 2): ("set_clock", "control"),
    (7, 3): ("read_clock_following", None), (7, 4): ("set_clock", "control"),
    (15, 1): ("nc_request_download", None), (15, 2): ("nc_download_block", None),
    (15, 3): ("nc_continue_download", None), (15, 4): ("nc_download_ended", None),
    (15, 6): ("nc_start_upload", None), (15, 7): ("nc_upload", None),
    (15, 8): ("nc_continue_upload", None),
}  # fmt: skip

MODE_NAMES = {
    0: "stop", 1: "warm_restart", 2: "run", 3: "hot_restart", 4: "hold", 6: "cold_restart",
    9: "run_redundant", 11: "link_up", 12: "update",
}  # fmt: skip

PLUS_OPCODES = {0x31: "request", 0x32: "response", 0x33: "notification", 0x02: "response2"}

# S7comm-plus functions (public Wireshark plugin's table): name, ics.operation.
PLUS_FUNCTIONS: dict[int, tuple[str, str]] = {
    0x04BB: ("explore", "diagnostic"),
    0x04CA: ("create_object", "session"),
    0x04D4: ("delete_object", "session"),
    0x04F2: ("set_variable", "write"),
    0x04FC: ("get_variable", "read"),
    0x0506: ("add_link", "other"),
    0x051A: ("remove_link", "other"),
    0x0524: ("get_link", "other"),
    0x0542: ("set_multi_variables", "write"),
    0x054C: ("get_multi_variables", "read"),
    0x0556: ("begin_sequence", "program"),
    0x0560: ("end_sequence", "program"),
    0x056B: ("invoke", "control"),
    0x057C: ("set_var_sub_streamed", "program"),
    0x0586: ("get_var_sub_streamed", "read"),
    0x0590: ("get_variables_address", "read"),
    0x059A: ("abort", "session"),
    0x05A9: ("error", "other"),
    0x05B3: ("init_ssl", "session"),
}

# SZL 0x0132 index 4: positions of the mode and startup switches
MODE_SWITCH = {0: "undefined", 1: "run", 2: "run-p", 3: "stop", 4: "mres"}
STARTUP_SWITCH = {0: "undefined", 1: "crst", 2: "wrst"}
