//! The numbers of KMIP 1.0-1.4 that kmsfs reads or writes: item tags, then the values of the
//! enumerations it uses (KMIP 1.4 specification, sections 9.1.3.1 and 9.1.3.2; the same
//! numbers as PyKMIP's `kmip/core/enums.py`).

pub const ACTIVATION_DATE: u32 = 0x420001;
pub const ATTRIBUTE: u32 = 0x420008;
pub const ATTRIBUTE_INDEX: u32 = 0x420009;
pub const ATTRIBUTE_NAME: u32 = 0x42000A;
pub const ATTRIBUTE_VALUE: u32 = 0x42000B;
pub const BATCH_COUNT: u32 = 0x42000D;
pub const BATCH_ERROR_CONTINUATION_OPTION: u32 = 0x42000E;
pub const BATCH_ITEM: u32 = 0x42000F;
pub const CRYPTOGRAPHIC_ALGORITHM: u32 = 0x420028;
pub const CRYPTOGRAPHIC_LENGTH: u32 = 0x42002A;
pub const CRYPTOGRAPHIC_USAGE_MASK: u32 = 0x42002C;
pub const INITIAL_DATE: u32 = 0x420039;
pub const KEY: u32 = 0x42003F;
pub const KEY_BLOCK: u32 = 0x420040;
pub const KEY_COMPRESSION_TYPE: u32 = 0x420041;
pub const KEY_FORMAT_TYPE: u32 = 0x420042;
pub const KEY_MATERIAL: u32 = 0x420043;
pub const KEY_VALUE: u32 = 0x420045;
pub const KEY_WRAPPING_DATA: u32 = 0x420046;
pub const KEY_WRAPPING_SPECIFICATION: u32 = 0x420047;
pub const LAST_CHANGE_DATE: u32 = 0x420048;
pub const MAXIMUM_ITEMS: u32 = 0x42004F;
pub const NAME: u32 = 0x420053;
pub const NAME_TYPE: u32 = 0x420054;
pub const NAME_VALUE: u32 = 0x420055;
pub const OBJECT_GROUP: u32 = 0x420056;
pub const OBJECT_TYPE: u32 = 0x420057;
pub const OPERATION: u32 = 0x42005C;
pub const PROTOCOL_VERSION: u32 = 0x420069;
pub const PROTOCOL_VERSION_MAJOR: u32 = 0x42006A;
pub const PROTOCOL_VERSION_MINOR: u32 = 0x42006B;
pub const QUERY_FUNCTION: u32 = 0x420074;
pub const REQUEST_HEADER: u32 = 0x420077;
pub const REQUEST_MESSAGE: u32 = 0x420078;
pub const REQUEST_PAYLOAD: u32 = 0x420079;
pub const RESPONSE_HEADER: u32 = 0x42007A;
pub const RESPONSE_MESSAGE: u32 = 0x42007B;
pub const RESPONSE_PAYLOAD: u32 = 0x42007C;
pub const RESULT_MESSAGE: u32 = 0x42007D;
pub const RESULT_REASON: u32 = 0x42007E;
pub const RESULT_STATUS: u32 = 0x42007F;
pub const REVOCATION_REASON: u32 = 0x420081;
pub const REVOCATION_REASON_CODE: u32 = 0x420082;
pub const STATE: u32 = 0x42008D;
pub const STORAGE_STATUS_MASK: u32 = 0x42008E;
pub const SYMMETRIC_KEY: u32 = 0x42008F;
pub const TEMPLATE_ATTRIBUTE: u32 = 0x420091;
pub const TIME_STAMP: u32 = 0x420092;
pub const UNIQUE_BATCH_ITEM_ID: u32 = 0x420093;
pub const UNIQUE_IDENTIFIER: u32 = 0x420094;
pub const VENDOR_IDENTIFICATION: u32 = 0x42009D;
pub const OFFSET_ITEMS: u32 = 0x4200D4;
pub const LOCATED_ITEMS: u32 = 0x4200D5;

/// Operation (9.1.3.2.27).
pub mod op {
    pub const CREATE: u32 = 0x01;
    pub const REGISTER: u32 = 0x03;
    pub const LOCATE: u32 = 0x08;
    pub const GET: u32 = 0x0A;
    pub const GET_ATTRIBUTES: u32 = 0x0B;
    pub const GET_ATTRIBUTE_LIST: u32 = 0x0C;
    pub const ADD_ATTRIBUTE: u32 = 0x0D;
    pub const MODIFY_ATTRIBUTE: u32 = 0x0E;
    pub const DELETE_ATTRIBUTE: u32 = 0x0F;
    pub const ACTIVATE: u32 = 0x12;
    pub const REVOKE: u32 = 0x13;
    pub const DESTROY: u32 = 0x14;
    pub const QUERY: u32 = 0x18;
    pub const DISCOVER_VERSIONS: u32 = 0x1E;
}

/// Result Status (9.1.3.2.28).
pub mod status {
    pub const SUCCESS: u32 = 0;
    pub const OPERATION_FAILED: u32 = 1;
}

/// Result Reason (9.1.3.2.29).
pub mod reason {
    pub const ITEM_NOT_FOUND: u32 = 0x01;
    pub const RESPONSE_TOO_LARGE: u32 = 0x02;
    pub const INVALID_MESSAGE: u32 = 0x04;
    pub const OPERATION_NOT_SUPPORTED: u32 = 0x05;
    pub const MISSING_DATA: u32 = 0x06;
    pub const INVALID_FIELD: u32 = 0x07;
    pub const FEATURE_NOT_SUPPORTED: u32 = 0x08;
    pub const CRYPTOGRAPHIC_FAILURE: u32 = 0x0A;
    pub const ILLEGAL_OPERATION: u32 = 0x0B;
    pub const PERMISSION_DENIED: u32 = 0x0C;
    pub const INDEX_OUT_OF_BOUNDS: u32 = 0x0E;
    pub const KEY_FORMAT_TYPE_NOT_SUPPORTED: u32 = 0x10;
    pub const KEY_VALUE_NOT_PRESENT: u32 = 0x13;
    pub const OBJECT_ALREADY_EXISTS: u32 = 0x18;
    pub const GENERAL_FAILURE: u32 = 0x100;
}

/// Object Type (9.1.3.2.12).
pub const OBJECT_TYPE_SYMMETRIC_KEY: u32 = 0x02;
/// Cryptographic Algorithm (9.1.3.2.13).
pub const ALGORITHM_AES: u32 = 0x03;
/// Key Format Type (9.1.3.2.3).
pub const KEY_FORMAT_RAW: u32 = 0x01;
pub const KEY_FORMAT_TRANSPARENT_SYMMETRIC: u32 = 0x07;
/// Name Type (9.1.3.2.11).
pub const NAME_TYPE_UNINTERPRETED_TEXT: u32 = 0x01;
/// Cryptographic Usage Mask bits (9.1.3.3.1): what every kmsfs key is for.
pub const USAGE_ENCRYPT_DECRYPT: i32 = 0x04 | 0x08;
/// Revocation Reason Code (9.1.3.2.19).
pub const REVOCATION_KEY_COMPROMISE: u32 = 0x02;
/// Batch Error Continuation Option (9.1.3.2.30).
pub const BATCH_CONTINUE: u32 = 0x01;
pub const BATCH_UNDO: u32 = 0x03;

/// State (9.1.3.2.16).
pub mod state {
    pub const PRE_ACTIVE: u32 = 1;
    pub const ACTIVE: u32 = 2;
    pub const DEACTIVATED: u32 = 3;
    pub const COMPROMISED: u32 = 4;
    pub const DESTROYED: u32 = 5;
}

/// Query Function (9.1.3.2.24).
pub mod query {
    pub const OPERATIONS: u32 = 1;
    pub const OBJECTS: u32 = 2;
    pub const SERVER_INFORMATION: u32 = 3;
}
