//! No reply or setpoint text makes the SCPI wire code panic, and numbers survive a round trip.

use super::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn parsing_arbitrary_replies_never_panics(s in "\\PC{0,80}") {
        let _ = parse_idn(&s);
        let _ = dialect_for(&parse_idn(&s));
        let _ = parse_error(&s);
        if let Some(v) = parse_number(&s) {
            prop_assert!(v.is_finite());
        }
        let _ = parse_numbers(&s, 3);
        let _ = parse_bool(&s);
        let _ = normalize_header(&s);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = parse_error(&s);
        let _ = parse_numbers(&s, 2);
        let _ = normalize_header(&s);
    }

    #[test]
    fn formatted_setpoints_parse_back(x in -1000.0f64..1000.0) {
        let v = parse_number(&num(x)).unwrap();
        prop_assert!((v - x).abs() <= 1e-6);
    }
}
