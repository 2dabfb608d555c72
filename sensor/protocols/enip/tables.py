"""Code tables of EtherNet/IP encapsulation and CIP: commands, statuses, services, classes,
data types, vendors and device types (names in snake_case, as the records carry them)."""

from __future__ import annotations

# Encapsulation commands (EtherNet/IP adaptation of CIP, section 2-3).
COMMANDS: dict[int, str] = {
    0x0000: "nop",
    0x0001: "list_targets",  # obsolete, still sent by some scanners
    0x0004: "list_services",
    0x0063: "list_identity",
    0x0064: "list_interfaces",
    0x0065: "register_session",
    0x0066: "unregister_session",
    0x006F: "send_rr_data",
    0x0070: "send_unit_data",
    0x0072: "indicate_status",
    0x0073: "cancel",
    0x00C8: "start_dtls",
}
LIST_COMMANDS = frozenset((0x0001, 0x0004, 0x0063, 0x0064))
NO_REPLY = frozenset((0x0000, 0x0066, 0x0072, 0x0073))  # commands the target never answers

ENCAP_STATUS: dict[int, str] = {
    0x0000: "success",
    0x0001: "invalid_command",
    0x0002: "insufficient_memory",
    0x0003: "incorrect_data",
    0x0064: "invalid_session_handle",
    0x0065: "invalid_length",
    0x0069: "unsupported_protocol_revision",
    0x006A: "encapsulated_cip_service_not_allowed",
}

# Common packet format item types.
CPF_NULL = 0x0000
CPF_LIST_IDENTITY = 0x000C
CPF_CONNECTED_ADDRESS = 0x00A1
CPF_CONNECTED_DATA = 0x00B1
CPF_UNCONNECTED_DATA = 0x00B2
CPF_LIST_SERVICES = 0x0100
CPF_SOCKADDR_O_T = 0x8000
CPF_SOCKADDR_T_O = 0x8001
CPF_SEQUENCED_ADDRESS = 0x8002

# CIP common services (CIP Vol 1, Appendix A).
COMMON_SERVICES: dict[int, str] = {
    0x01: "get_attributes_all",
    0x02: "set_attributes_all",
    0x03: "get_attribute_list",
    0x04: "set_attribute_list",
    0x05: "reset",
    0x06: "start",
    0x07: "stop",
    0x08: "create",
    0x09: "delete",
    0x0A: "multiple_service_packet",
    0x0D: "apply_attributes",
    0x0E: "get_attribute_single",
    0x10: "set_attribute_single",
    0x11: "find_next_object_instance",
    0x14: "error_response",
    0x15: "restore",
    0x16: "save",
    0x17: "nop",
    0x18: "get_member",
    0x19: "set_member",
    0x1A: "insert_member",
    0x1B: "remove_member",
    0x1C: "group_sync",
}
SERVICE_MSP = 0x0A

# Connection Manager (class 0x06) services.
CLASS_CONNECTION_MANAGER = 0x06
CM_SERVICES: dict[int, str] = {
    0x4E: "forward_close",
    0x52: "unconnected_send",
    0x54: "forward_open",
    0x56: "get_connection_data",
    0x57: "search_connection_data",
    0x5A: "get_connection_owner",
    0x5B: "large_forward_open",
}
SERVICE_FORWARD_CLOSE = 0x4E
SERVICE_UNCONNECTED_SEND = 0x52
SERVICE_FORWARD_OPEN = 0x54
SERVICE_LARGE_FORWARD_OPEN = 0x5B

# File object (class 0x37) services: program and configuration transfer.
CLASS_FILE = 0x37
FILE_SERVICES: dict[int, str] = {
    0x4B: "initiate_upload",
    0x4C: "initiate_download",
    0x4D: "initiate_partial_read",
    0x4E: "initiate_partial_write",
    0x4F: "upload_transfer",
    0x50: "download_transfer",
    0x51: "clear_file",
}

# Logix controllers: services on tags (symbolic paths, the Symbol and Template classes).
LOGIX_SERVICES: dict[int, str] = {
    0x4C: "read_tag",
    0x4D: "write_tag",
    0x4E: "read_modify_write_tag",
    0x52: "read_tag_fragmented",
    0x53: "write_tag_fragmented",
    0x55: "get_instance_attribute_list",
}
CLASS_SYMBOL = 0x6B
CLASS_TEMPLATE = 0x6C
CLASS_PCCC = 0x67
CLASS_IDENTITY = 0x01
CLASS_ASSEMBLY = 0x04
CLASS_NVS = 0xA1  # Non-Volatile Storage: firmware updates (ControlFLASH)
CLASS_LOGIX_CONTROLLER = 0x8E  # the Logix controller object: mode changes (run/program)

CLASSES: dict[int, str] = {
    0x01: "identity",
    0x02: "message_router",
    0x03: "devicenet",
    0x04: "assembly",
    0x05: "connection",
    0x06: "connection_manager",
    0x07: "register",
    0x08: "discrete_input_point",
    0x09: "discrete_output_point",
    0x0A: "analog_input_point",
    0x0B: "analog_output_point",
    0x0E: "presence_sensing",
    0x0F: "parameter",
    0x10: "parameter_group",
    0x12: "group",
    0x1D: "discrete_input_group",
    0x1E: "discrete_output_group",
    0x1F: "discrete_group",
    0x20: "analog_input_group",
    0x21: "analog_output_group",
    0x22: "analog_group",
    0x23: "position_sensor",
    0x24: "position_controller_supervisor",
    0x25: "position_controller",
    0x26: "block_sequencer",
    0x27: "command_block",
    0x28: "motor_data",
    0x29: "control_supervisor",
    0x2A: "ac_dc_drive",
    0x2B: "acknowledge_handler",
    0x2C: "overload",
    0x2D: "softstart",
    0x2E: "selection",
    0x30: "s_device_supervisor",
    0x37: "file",
    0x39: "safety_supervisor",
    0x3A: "safety_validator",
    0x43: "time_sync",
    0x44: "modbus",
    0x47: "device_level_ring",
    0x48: "qos",
    0x4D: "base_energy",
    0x4E: "electrical_energy",
    0x5D: "cip_security",
    0x5E: "ethernet_ip_security",
    0x67: "pccc",
    0x6B: "symbol",
    0x6C: "template",
    0x8B: "wall_clock_time",
    0x8E: "logix_controller",
    0xA1: "non_volatile_storage",
    0xF0: "controlnet",
    0xF4: "port",
    0xF5: "tcp_ip_interface",
    0xF6: "ethernet_link",
    0xF7: "componet_link",
    0xF8: "componet_repeater",
}

# CIP general status codes (CIP Vol 1, Appendix B).
GENERAL_STATUS: dict[int, str] = {
    0x00: "success",
    0x01: "connection_failure",
    0x02: "resource_unavailable",
    0x03: "invalid_parameter_value",
    0x04: "path_segment_error",
    0x05: "path_destination_unknown",
    0x06: "partial_transfer",
    0x07: "connection_lost",
    0x08: "service_not_supported",
    0x09: "invalid_attribute_value",
    0x0A: "attribute_list_error",
    0x0B: "already_in_requested_mode",
    0x0C: "object_state_conflict",
    0x0D: "object_already_exists",
    0x0E: "attribute_not_settable",
    0x0F: "privilege_violation",
    0x10: "device_state_conflict",
    0x11: "reply_data_too_large",
    0x12: "fragmentation_of_a_primitive_value",
    0x13: "not_enough_data",
    0x14: "attribute_not_supported",
    0x15: "too_much_data",
    0x16: "object_does_not_exist",
    0x17: "service_fragmentation_sequence_not_in_progress",
    0x18: "no_stored_attribute_data",
    0x19: "store_operation_failure",
    0x1A: "routing_failure_request_too_large",
    0x1B: "routing_failure_response_too_large",
    0x1C: "missing_attribute_list_entry_data",
    0x1D: "invalid_attribute_value_list",
    0x1E: "embedded_service_error",
    0x1F: "vendor_specific_error",
    0x20: "invalid_parameter",
    0x21: "write_once_value_already_written",
    0x22: "invalid_reply_received",
    0x23: "buffer_overflow",
    0x24: "invalid_message_format",
    0x25: "key_failure_in_path",
    0x26: "path_size_invalid",
    0x27: "unexpected_attribute_in_list",
    0x28: "invalid_member_id",
    0x29: "member_not_settable",
    0x2A: "group_2_only_server_general_failure",
    0x2B: "unknown_modbus_error",
    0x2C: "attribute_not_gettable",
}
SUCCESS_STATUS = frozenset((0x00, 0x06))  # partial transfer: a fragment, not a failure

# Elementary data types (CIP Vol 1, C-6.1) as Logix tag services carry them:
# code -> (name, struct format, size)
DATA_TYPES: dict[int, tuple[str, str, int]] = {
    0xC1: ("bool", "<B", 1),
    0xC2: ("sint", "<b", 1),
    0xC3: ("int", "<h", 2),
    0xC4: ("dint", "<i", 4),
    0xC5: ("lint", "<q", 8),
    0xC6: ("usint", "<B", 1),
    0xC7: ("uint", "<H", 2),
    0xC8: ("udint", "<I", 4),
    0xC9: ("ulint", "<Q", 8),
    0xCA: ("real", "<f", 4),
    0xCB: ("lreal", "<d", 8),
    0xD1: ("byte", "<B", 1),
    0xD2: ("word", "<H", 2),
    0xD3: ("dword", "<I", 4),
    0xD4: ("lword", "<Q", 8),
}
STRUCT_TYPES = frozenset((0xA0, 0xA2))  # followed by a 16-bit structure handle

# Vendor ids of the common vendors (ODVA's list; the rest are shown as their number).
VENDORS: dict[int, str] = {
    1: "Rockwell Automation/Allen-Bradley",
    3: "Honeywell",
    5: "Rockwell Automation/Reliance Electric",
    7: "SMC",
    8: "Molex",
    12: "Banner Engineering",
    26: "Festo",
    40: "WAGO",
    43: "Balluff",
    44: "Yaskawa",
    46: "ABB",
    47: "Omron",
    48: "Turck",
    50: "Real Time Automation",
    57: "Pepperl+Fuchs",
    68: "Eaton",
    74: "Hitachi",
    82: "Mitsubishi Electric",
    83: "Opto 22",
    90: "HMS Industrial Networks",
    94: "Advantech",
    97: "Danfoss",
    108: "Beckhoff",
    109: "National Instruments",
    121: "KUKA",
    143: "GE",
    145: "Siemens",
    159: "IDEC",
    161: "Mitsubishi Electric",
    176: "Red Lion Controls",
    181: "Pilz",
    243: "Schneider Electric",
    250: "Yokogawa",
    255: "Bosch Rexroth",
    259: "LS Electric",
    283: "Hilscher",
    309: "ProSoft Technology",
    315: "SEW-Eurodrive",
    319: "Fuji Electric",
    322: "ifm",
    326: "GE Fanuc",
    345: "Endress+Hauser",
    356: "Fanuc",
    367: "Keyence",
}

# CIP device types (the Identity object's attribute 2; CIP Vol 1, chapter 6).
DEVICE_TYPES: dict[int, str] = {
    0x00: "generic_device",
    0x02: "ac_drive",
    0x03: "motor_overload",
    0x04: "limit_switch",
    0x05: "inductive_proximity_switch",
    0x06: "photoelectric_sensor",
    0x07: "general_purpose_discrete_io",
    0x09: "resolver",
    0x0C: "communications_adapter",
    0x0E: "programmable_logic_controller",
    0x10: "position_controller",
    0x13: "dc_drive",
    0x15: "contactor",
    0x16: "motor_starter",
    0x17: "soft_start",
    0x18: "human_machine_interface",
    0x1A: "mass_flow_controller",
    0x1B: "pneumatic_valve",
    0x1C: "vacuum_pressure_gauge",
    0x1D: "process_control_value",
    0x1E: "residual_gas_analyzer",
    0x1F: "dc_power_generator",
    0x20: "rf_power_generator",
    0x21: "turbomolecular_vacuum_pump",
    0x22: "encoder",
    0x23: "safety_discrete_io",
    0x24: "fluid_flow_controller",
    0x25: "cip_motion_drive",
    0x26: "componet_repeater",
    0x27: "mass_flow_controller_enhanced",
    0x28: "cip_modbus_device",
    0x29: "cip_modbus_translator",
    0x2A: "safety_analog_io",
    0x2B: "generic_device_keyable",
    0x2C: "managed_switch",
    0x2D: "cip_motion_safety_drive",
    0x2E: "safety_drive",
    0x2F: "cip_motion_encoder",
    0x30: "cip_motion_converter",
    0x31: "cip_motion_io",
}

IDENTITY_STATES: dict[int, str] = {
    0: "nonexistent",
    1: "self_testing",
    2: "standby",
    3: "operational",
    4: "major_recoverable_fault",
    5: "major_unrecoverable_fault",
    255: "default",
}


def vendor_name(vendor_id: int) -> str:
    return VENDORS.get(vendor_id) or f"vendor_{vendor_id}"


def class_name(code: int) -> str:
    return CLASSES.get(code) or f"class_0x{code:02x}"
