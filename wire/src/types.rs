//! Values the protocol carries, with checked constructors.

use std::fmt;
use std::str::FromStr;

/// A phone number in E.164 form, held as its digits read as an integer: 8 to 15 digits
/// (country code included). Shown as `+15551234567`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(u64);

impl Phone {
    pub const MIN: u64 = 10_000_000; // 8 digits
    pub const MAX: u64 = 999_999_999_999_999; // 15 digits

    pub const fn new(digits: u64) -> Option<Phone> {
        if digits >= Self::MIN && digits <= Self::MAX {
            Some(Phone(digits))
        } else {
            None
        }
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// Why a string is not an E.164 number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("a phone number starts with '+' followed by its country code")]
    NoPlus,
    #[error("a phone number has only digits after the '+'")]
    NotDigits,
    #[error("a phone number has 8 to 15 digits")]
    Length,
    #[error("a country code does not start with 0")]
    LeadingZero,
}

impl FromStr for Phone {
    type Err = PhoneError;

    fn from_str(s: &str) -> Result<Phone, PhoneError> {
        let digits = s.strip_prefix('+').ok_or(PhoneError::NoPlus)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.is_empty() {
            return Err(PhoneError::NotDigits);
        }
        if !(8..=15).contains(&digits.len()) {
            return Err(PhoneError::Length);
        }
        if digits.starts_with('0') {
            return Err(PhoneError::LeadingZero);
        }
        Phone::new(digits.parse().map_err(|_| PhoneError::NotDigits)?).ok_or(PhoneError::Length)
    }
}

/// A registration PIN: five decimal digits, `00000` to `99999`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(u32);

impl Pin {
    pub const fn new(v: u32) -> Option<Pin> {
        if v < 100_000 {
            Some(Pin(v))
        } else {
            None
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(*****)") // never in logs
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

/// A device key: 256 random bits issued at registration.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(…)") // never in logs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_parse_and_print() {
        let p: Phone = "+15551234567".parse().unwrap();
        assert_eq!(p.get(), 15551234567);
        assert_eq!(p.to_string(), "+15551234567");
        assert_eq!("15551234567".parse::<Phone>(), Err(PhoneError::NoPlus));
        assert_eq!("+1555-1234".parse::<Phone>(), Err(PhoneError::NotDigits));
        assert_eq!("+1234567".parse::<Phone>(), Err(PhoneError::Length));
        assert_eq!(
            "+1234567890123456".parse::<Phone>(),
            Err(PhoneError::Length)
        );
        assert_eq!(
            "+05551234567".parse::<Phone>(),
            Err(PhoneError::LeadingZero)
        );
        assert_eq!("+".parse::<Phone>(), Err(PhoneError::NotDigits));
    }

    #[test]
    fn pins_are_five_digits_and_never_printed_by_debug() {
        assert!(Pin::new(100_000).is_none());
        assert_eq!(Pin::new(42).unwrap().to_string(), "00042");
        assert_eq!(format!("{:?}", Pin::new(42).unwrap()), "Pin(*****)");
        assert_eq!(format!("{:?}", Key([7; 32])), "Key(…)");
    }
}
