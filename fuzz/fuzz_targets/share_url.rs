//! The Share URL parser on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(url) = tigress_protocol::ShareUrl::parse(text)
    {
        let again = tigress_protocol::ShareUrl::parse(&url.expose_url());
        assert_eq!(again.as_ref(), Ok(&url));
    }
});
