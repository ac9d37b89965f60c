//! How the router marks what it stores: the first byte of every stored body says
//! whether the record is a client message or a receipt for its sender.
//!
//! ```text
//! message:            0x01 | client body..
//! delivered receipt:  0x02
//! read receipt:       0x03
//! ```
//! For a receipt, the log record's `sender` is the user who received or read the
//! message and `msg_id` is the original message's id.

use wire::frame::ReceiptKind;

pub const MESSAGE: u8 = 0x01;
pub const DELIVERED: u8 = 0x02;
pub const READ: u8 = 0x03;

pub enum Stored<'a> {
    Message(&'a [u8]),
    Receipt(ReceiptKind),
}

pub fn parse(body: &[u8]) -> Option<Stored<'_>> {
    match body.split_first()? {
        (&MESSAGE, rest) => Some(Stored::Message(rest)),
        (&DELIVERED, []) => Some(Stored::Receipt(ReceiptKind::Delivered)),
        (&READ, []) => Some(Stored::Receipt(ReceiptKind::Read)),
        _ => None,
    }
}

pub fn receipt_byte(kind: ReceiptKind) -> u8 {
    match kind {
        ReceiptKind::Delivered => DELIVERED,
        ReceiptKind::Read => READ,
    }
}
