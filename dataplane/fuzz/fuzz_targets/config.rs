//! The config loader on arbitrary TOML: a config or an error that names
//! a key; never a panic. An accepted config survives a round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ultragate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(cfg) => {
            let again = toml::to_string(&cfg).expect("an accepted config serialises");
            let back = Config::parse(&again).expect("and is accepted again");
            assert_eq!(back, cfg);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
