//! Distinguished names as operators read them: `CN=foo, O=bar`, in the
//! order the name holds its entries, and field by field.

use openssl::nid::Nid;
use openssl::x509::X509NameRef;

/// `(short name, value)` of every entry, in name order: `CN`, `O`, `OU`, ...
pub fn name_fields(name: &X509NameRef) -> Vec<(String, String)> {
    name.entries()
        .map(|e| {
            (
                e.object().nid().short_name().unwrap_or("?").to_string(),
                e.data()
                    .to_string()
                    .unwrap_or_else(|_| "<unprintable>".to_string()),
            )
        })
        .collect()
}

/// `CN=foo, O=bar` in the order the name holds its entries.
pub fn name_to_string(name: &X509NameRef) -> String {
    name_fields(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The common name of a name, if it has one.
pub fn common_name(name: &X509NameRef) -> Option<String> {
    name.entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
}
