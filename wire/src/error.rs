//! Errors: why bytes are not a frame, and the codes that go on the wire.

use crate::frame::Kind;

/// Defines [`ErrorCode`] from one table: each code's name and number, with
/// [`ErrorCode::from_u16`] and [`ErrorCode::get`] from the same lines.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $name:ident = $num:literal,)*) => {
        /// Codes carried by `Refused`, `Error` and `Close` frames. Stable: new codes are
        /// only added, and a code this build does not know (a newer peer's) is kept as
        /// [`ErrorCode::Other`] rather than refused (docs/PROTOCOL.md: a client treats an
        /// unknown code as a close in `Close`, and as not retryable elsewhere).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $name,)*
            /// A code this build does not know.
            Other(u16),
        }

        impl ErrorCode {
            /// The code numbered `v`, if this build knows it.
            pub fn from_u16(v: u16) -> Option<ErrorCode> {
                match v {
                    $($num => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }

            /// Its number on the wire.
            pub fn get(self) -> u16 {
                match self {
                    $(ErrorCode::$name => $num,)*
                    ErrorCode::Other(v) => v,
                }
            }
        }
    };
}

error_codes! {
    /// A frame's fields are not valid for its kind.
    Malformed = 1,
    /// A frame longer than the negotiated maximum.
    FrameTooLarge = 2,
    /// A frame kind this server does not know.
    UnknownKind = 3,
    /// No protocol version in common; the client must upgrade.
    UnsupportedVersion = 4,
    /// A frame that needs a logged-in session, sent before login.
    NotLoggedIn = 5,
    /// Login with an unknown number or a wrong key.
    AuthFailed = 6,
    /// Not a valid E.164 number.
    BadPhone = 7,
    /// Wrong PIN (the PIN stays valid until 5 wrong tries).
    PinWrong = 8,
    /// No valid PIN for this number: never requested, expired, used, or voided.
    PinInvalid = 9,
    /// Too many requests; retry later.
    RateLimited = 10,
    /// The recipient is not registered.
    RecipientUnknown = 11,
    /// The recipient's queue is full; retry later.
    QueueFull = 12,
    /// The server cannot take it now (a router is unavailable); retry later.
    TryAgain = 13,
    /// Close: the number was registered on another device.
    LoggedInElsewhere = 14,
    /// Close: no frame for too long.
    IdleTimeout = 15,
    /// Close: the TLS handshake or `Hello` took too long.
    HandshakeTimeout = 16,
    /// Close: the server is shutting down.
    ServerShutdown = 17,
    /// Close: reconnect (the server is draining for an upgrade).
    Reconnect = 18,
    /// A frame that is not allowed now or in this direction.
    ProtocolViolation = 19,
    /// The server failed; the client may retry.
    Internal = 20,
    /// Close: the client is done (normal close from either side).
    Normal = 21,
    /// Close: the login did not come in time.
    LoginTimeout = 22,
    /// Refused: the server's disk is full; new messages wait until recipients read
    /// theirs (or an operator frees space). Retry later, in minutes, not at once.
    DiskFull = 23,
    /// Refused: this `msg_id` was used already for another message to the same
    /// recipient (a different body); the server keeps the first. Use a new id.
    IdReused = 24,
}

impl ErrorCode {
    /// The code numbered `v`: a known one, or [`ErrorCode::Other`].
    pub fn from_wire(v: u16) -> ErrorCode {
        ErrorCode::from_u16(v).unwrap_or(ErrorCode::Other(v))
    }

    /// The client may send the same request again later and expect it to succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::QueueFull
                | ErrorCode::TryAgain
                | ErrorCode::Internal
                | ErrorCode::DiskFull
        )
    }
}

/// Why bytes are not a frame. `Incomplete` is not an error of the peer: more bytes
/// are needed. Every other variant is the peer's fault and closes the connection with
/// [`FrameError::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("incomplete frame: {needed} bytes needed")]
    Incomplete { needed: usize },
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("reserved envelope bits set")]
    Reserved,
    #[error("malformed {kind:?} frame: {why}")]
    Malformed { kind: Kind, why: &'static str },
}

impl FrameError {
    /// The code to send back before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::Incomplete { .. } | FrameError::Malformed { .. } | FrameError::Reserved => {
                ErrorCode::Malformed
            }
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::UnknownKind(_) => ErrorCode::UnknownKind,
        }
    }
}
