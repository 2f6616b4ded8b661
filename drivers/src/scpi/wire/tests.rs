//! The SCPI wire tables and formats, case by case.

use super::*;
use cyclerd_protocols::Command;

const EA: Ratings = Ratings {
    voltage_v: 60.0,
    current_a: 60.0,
    power_w: 1500.0,
};

#[test]
fn identities_select_their_dialects() {
    let cases = [
        (
            "EA Elektro-Automatik GmbH, PSB 10060-60, 2100330001, V2.10",
            Some(Dialect::EaPsb),
        ),
        (
            "KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.12b",
            Some(Dialect::Keithley24xx),
        ),
        (
            "Keysight Technologies,B2901A,MY51141234,5.0.1982.7300",
            Some(Dialect::KeysightB2900),
        ),
        (
            "ITECH Ltd., IT6012C-80-300, 8006000117, 1.09-1.08",
            Some(Dialect::ItechIt6000),
        ),
        (
            "B&K Precision, 8600, 800600011797, 1.37-1.42",
            Some(Dialect::Bk8600),
        ),
        ("KEITHLEY INSTRUMENTS INC.,MODEL 2000,1,A", None),
        ("", None),
    ];
    for (idn, dialect) in cases {
        assert_eq!(dialect_for(&parse_idn(idn)), dialect, "{idn}");
    }
}

#[test]
fn numbers_are_read_with_or_without_units() {
    assert_eq!(parse_number("48.01 V"), Some(48.01));
    assert_eq!(parse_number("+4.200000E+00"), Some(4.2));
    assert_eq!(parse_number("2.00A"), Some(2.0));
    assert_eq!(parse_number(" -1.5e-3 "), Some(-1.5e-3));
    assert_eq!(parse_number("9.91E37"), None);
    assert_eq!(parse_number("V"), None);
    assert_eq!(parse_number("1.0 V!"), None);
    assert_eq!(
        parse_numbers("48.01 V, 2.00 A, 96.0 W", 3),
        Some(vec![48.01, 2.0, 96.0])
    );
    assert_eq!(parse_numbers("48.01 V, 2.00 A", 3), None);
}

#[test]
fn error_queue_replies_of_both_styles_parse() {
    assert_eq!(
        parse_error("0,\"No error\""),
        Some(ScpiError {
            code: 0,
            message: "No error".into()
        })
    );
    assert!(!parse_error("+0,\"No error\"").unwrap().is_error());
    let e = parse_error("-222,\"Data out of range\"").unwrap();
    assert_eq!((e.code, e.message.as_str()), (-222, "Data out of range"));
    let k = parse_error("-113,\"Undefined header;1;2014/05/22 13:37:07.523\"").unwrap();
    assert_eq!(k.message, "Undefined header");
    assert_eq!(parse_error("garbage"), None);
}

#[test]
fn setpoints_are_plain_decimals() {
    assert_eq!(num(4.2), "4.2");
    assert_eq!(num(2.0), "2");
    assert_eq!(num(-0.0), "0");
    assert_eq!(num(1e-7), "0");
    assert_eq!(num(f64::NAN), "0");
}

#[test]
fn headers_normalise_to_short_forms() {
    assert_eq!(normalize_header(":SOURce:CURRent:LEVel"), "SOUR:CURR");
    assert_eq!(normalize_header("syst:err:next?"), "SYST:ERR?");
    assert_eq!(normalize_header("MEASure:ARRay?"), "MEAS:ARR?");
    assert_eq!(normalize_header("*IDN?"), "*IDN?");
    assert_eq!(normalize_header("SYSTem:LOCK"), "SYST:LOCK");
    assert_eq!(
        normalize_header("CURRent:LIMit:POSitive"),
        normalize_header("CURR:LIM")
    );
    assert_eq!(normalize_header("curr:limit:negative"), "CURR:LIM:NEG");
}

#[test]
fn itech_ratings_come_from_the_designation() {
    assert_eq!(
        ratings_for_model("IT6012C-80-300"),
        Some(Ratings {
            voltage_v: 80.0,
            current_a: 300.0,
            power_w: 12000.0
        })
    );
    assert_eq!(ratings_for_model("IT60C-x-1"), None);
}

#[test]
fn an_ea_charge_sets_the_crossover_voltage_and_no_sink() {
    let p = program(
        Dialect::EaPsb,
        EA,
        &Command::Current {
            amps: 2.5,
            voltage_max: 4.2,
            voltage_min: 2.5,
        },
    )
    .unwrap();
    assert!(p.output && !p.sinking);
    assert_eq!(
        p.setpoints,
        [
            "SINK:CURR 0",
            "SINK:POW 0",
            "VOLT 4.2",
            "CURR 2.5",
            "POW 1500"
        ]
    );
}

#[test]
fn an_smu_discharges_as_a_voltage_source_at_the_cutoff() {
    let p = program(
        Dialect::Keithley24xx,
        EA,
        &Command::Current {
            amps: -1.0,
            voltage_max: 4.2,
            voltage_min: 3.0,
        },
    )
    .unwrap();
    assert_eq!(
        p.setpoints,
        [":SOUR:FUNC VOLT", ":SOUR:VOLT:ILIM 1", ":SOUR:VOLT 3"]
    );
}

#[test]
fn a_load_refuses_to_charge_and_power_on_an_smu_is_unsupported() {
    let charge = Command::Current {
        amps: 1.0,
        voltage_max: 4.2,
        voltage_min: 3.0,
    };
    assert!(program(Dialect::Bk8600, EA, &charge).is_err());
    let power = Command::Power {
        watts: 1.0,
        voltage_max: 4.2,
        voltage_min: 3.0,
    };
    assert!(program(Dialect::Keithley24xx, EA, &power).is_err());
    assert!(!program(Dialect::Bk8600, EA, &Command::Off).unwrap().output);
}

#[test]
fn an_ea_program_reads_back_as_the_setpoints_it_wrote() {
    let p = program(
        Dialect::EaPsb,
        EA,
        &Command::Current {
            amps: 2.5,
            voltage_max: 4.2,
            voltage_min: 2.5,
        },
    )
    .unwrap();
    let written = written_setpoints(&p.setpoints);
    let replies = ["4.20 V", "2.50 A", "1500.0 W", "0.00 A", "0.0 W"];
    assert_eq!(read_setpoints(&replies), Some(written));
    assert_eq!(read_setpoints(&replies[..4]), None);
    assert_eq!(read_setpoints(&["4.20 V", "x", "1", "2", "3"]), None);
    assert!(setpoint_queries(Dialect::Keithley24xx).is_empty());
}

#[test]
fn at_rest_every_dialect_zeroes_every_level_its_programs_set() {
    let (v, i) = (4.2, 2.0);
    let commands = [
        Command::Current {
            amps: i,
            voltage_max: v,
            voltage_min: 2.5,
        },
        Command::Current {
            amps: -i,
            voltage_max: v,
            voltage_min: 2.5,
        },
        Command::Voltage {
            volts: v,
            current_max: i,
        },
        Command::Power {
            watts: 5.0,
            voltage_max: v,
            voltage_min: 2.5,
        },
        Command::Power {
            watts: -5.0,
            voltage_max: v,
            voltage_min: 2.5,
        },
    ];
    let header = |line: &String| line.split(' ').next().unwrap_or_default().to_string();
    for dialect in [
        Dialect::EaPsb,
        Dialect::Keithley24xx,
        Dialect::KeysightB2900,
        Dialect::ItechIt6000,
        Dialect::Bk8600,
    ] {
        let rest = program(dialect, EA, &Command::Off).unwrap();
        assert!(!rest.output);
        assert!(rest.setpoints.iter().all(|l| l.ends_with(" 0")), "{rest:?}");
        let zeroed: Vec<String> = rest.setpoints.iter().map(header).collect();
        // Every level a program drives; the source function and an SMU's compliance (which
        // cannot be zero) are not levels.
        for command in &commands {
            let Ok(p) = program(dialect, EA, command) else {
                continue;
            };
            for level in p.setpoints.iter().map(header).filter(|h| {
                !h.contains("FUNC")
                    && !h.contains("LIM:")
                    && !h.ends_with("PROT")
                    && !h.ends_with("VLIM")
                    && !h.ends_with("ILIM")
            }) {
                assert!(
                    zeroed.contains(&level),
                    "{dialect:?} rest leaves {level} set"
                );
            }
        }
    }
}
