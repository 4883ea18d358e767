//! From an etcd v2 `/v2/keys` request's method, key and parameters (URL query and form body,
//! merged as Go's `Request.FormValue` does: body first) to a typed request, with etcd's error
//! codes for malformed parameters. Pure, so it can be fuzzed.

use crate::store::error::*;
use crate::store::{clean_key, Op, Put, MAX_VALUE_BYTES};

/// What a `/v2/keys` request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysRequest {
    Get {
        key: String,
        recursive: bool,
        sorted: bool,
        quorum: bool,
        head: bool,
    },
    Watch {
        key: String,
        recursive: bool,
        wait_index: Option<u64>,
        stream: bool,
    },
    Write(Op),
}

/// Parameters by name; the first occurrence of a name counts.
pub struct Params<'a> {
    pairs: &'a [(String, String)],
}

impl<'a> Params<'a> {
    pub fn new(pairs: &'a [(String, String)]) -> Self {
        Params { pairs }
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Go's `strconv.ParseBool`; absent is false, anything else unparsable is 209.
    fn bool(&self, name: &str) -> Result<bool, EtcdError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| invalid(INVALID_FIELD, name)),
        }
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, EtcdError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_bool(v)
                .map(Some)
                .ok_or_else(|| invalid(INVALID_FIELD, name)),
        }
    }

    fn uint(&self, name: &str, code: u32) -> Result<Option<u64>, EtcdError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| invalid(code, name)),
        }
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// etcd's cause for a malformed parameter: the name in quotes, except for the two nullable
/// booleans (`prevExist`, `refresh`), which etcd names bare.
fn invalid(code: u32, name: &str) -> EtcdError {
    if matches!(name, "prevExist" | "refresh") {
        EtcdError::new(code, format!("invalid value for {name}"), 0)
    } else {
        EtcdError::new(code, format!("invalid value for \"{name}\""), 0)
    }
}

/// Parses one request. `method` is the HTTP method in upper case; `key` is the path after
/// `/v2/keys`.
pub fn parse(
    method: &str,
    key: &str,
    pairs: &[(String, String)],
) -> Result<KeysRequest, EtcdError> {
    let p = Params::new(pairs);
    let key = clean_key(key);
    let recursive = p.bool("recursive")?;
    let sorted = p.bool("sorted")?;
    let wait = p.bool("wait")?;
    let stream = p.bool("stream")?;
    let quorum = p.bool("quorum")?;
    let dir = p.bool("dir")?;
    let refresh = p.bool("refresh")?;
    let prev_exist = p.opt_bool("prevExist")?;
    let prev_index = p.uint("prevIndex", INDEX_NAN)?;
    let wait_index = p.uint("waitIndex", INDEX_NAN)?;
    // `ttl=` (empty) means no TTL: the key becomes permanent.
    let ttl = match p.get("ttl") {
        None | Some("") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| invalid(TTL_NAN, "ttl"))?),
    };
    let prev_value = p.get("prevValue").map(str::to_string);
    if prev_value.as_deref() == Some("") {
        return Err(EtcdError::new(
            PREV_VALUE_REQUIRED,
            "\"prevValue\" cannot be empty",
            0,
        ));
    }
    let value = p.get("value").map(str::to_string);
    if let Some(v) = &value {
        if v.len() > MAX_VALUE_BYTES {
            return Err(EtcdError::new(
                INVALID_FIELD,
                format!(
                    "value is {} bytes; crust kv accepts at most {MAX_VALUE_BYTES} bytes",
                    v.len()
                ),
                0,
            ));
        }
    }
    if (wait || stream) && !matches!(method, "GET" | "HEAD") {
        return Err(EtcdError::new(
            INVALID_FIELD,
            "\"wait\" and \"stream\" are only for GET",
            0,
        ));
    }
    match method {
        "GET" | "HEAD" => {
            if wait {
                Ok(KeysRequest::Watch {
                    key,
                    recursive,
                    wait_index,
                    stream,
                })
            } else {
                Ok(KeysRequest::Get {
                    key,
                    recursive,
                    sorted,
                    quorum,
                    head: method == "HEAD",
                })
            }
        }
        "PUT" => {
            if refresh {
                if value.as_deref().is_some_and(|v| !v.is_empty()) {
                    return Err(EtcdError::new(
                        REFRESH_VALUE,
                        "A value was provided on a refresh",
                        0,
                    ));
                }
                if ttl.is_none() {
                    return Err(EtcdError::new(REFRESH_TTL_REQUIRED, "No TTL value set", 0));
                }
            }
            // etcd ignores `value` when `dir=true` (the store makes a directory), so do we.
            Ok(KeysRequest::Write(Op::Put(Put {
                key,
                value: if dir || refresh {
                    None
                } else {
                    Some(value.unwrap_or_default())
                },
                dir,
                ttl,
                prev_exist,
                prev_value,
                prev_index,
                refresh,
            })))
        }
        "POST" => Ok(KeysRequest::Write(Op::Post {
            dir: key,
            value: if dir {
                None
            } else {
                Some(value.unwrap_or_default())
            },
            ttl,
        })),
        "DELETE" => Ok(KeysRequest::Write(Op::Delete {
            key,
            dir,
            recursive,
            prev_value,
            prev_index,
        })),
        other => Err(EtcdError::new(
            INVALID_FORM,
            format!("method {other} is not allowed on /v2/keys"),
            0,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn code(method: &str, q: &[(&str, &str)]) -> u32 {
        parse(method, "/k", &pairs(q)).unwrap_err().error_code
    }

    #[test]
    fn malformed_parameters_get_etcds_codes() {
        assert_eq!(code("PUT", &[("ttl", "abc")]), TTL_NAN);
        let e = parse("PUT", "/k", &pairs(&[("ttl", "abc")])).unwrap_err();
        assert_eq!(e.cause, "invalid value for \"ttl\"");
        assert_eq!(code("GET", &[("recursive", "maybe")]), INVALID_FIELD);
        assert_eq!(code("GET", &[("recursive", "")]), INVALID_FIELD);
        assert_eq!(code("PUT", &[("prevExist", "yes")]), INVALID_FIELD);
        assert_eq!(code("PUT", &[("prevIndex", "-1")]), INDEX_NAN);
        assert_eq!(
            code("GET", &[("wait", "true"), ("waitIndex", "x")]),
            INDEX_NAN
        );
        assert_eq!(code("PUT", &[("prevValue", "")]), PREV_VALUE_REQUIRED);
        assert_eq!(
            code("PUT", &[("refresh", "true"), ("value", "v"), ("ttl", "5")]),
            REFRESH_VALUE
        );
        assert_eq!(code("PUT", &[("refresh", "true")]), REFRESH_TTL_REQUIRED);
        assert_eq!(code("PUT", &[("wait", "true")]), INVALID_FIELD);
        assert_eq!(code("PATCH", &[]), INVALID_FORM);
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        let e = parse("PUT", "/k", &pairs(&[("value", &big)])).unwrap_err();
        assert!(e.cause.contains("at most"), "{}", e.cause);
    }

    #[test]
    fn requests_are_typed() {
        assert_eq!(
            parse(
                "GET",
                "a//b/",
                &pairs(&[("recursive", "true"), ("sorted", "1")])
            )
            .unwrap(),
            KeysRequest::Get {
                key: "/a/b".into(),
                recursive: true,
                sorted: true,
                quorum: false,
                head: false
            }
        );
        assert_eq!(
            parse("GET", "/a", &pairs(&[("wait", "true"), ("waitIndex", "7")])).unwrap(),
            KeysRequest::Watch {
                key: "/a".into(),
                recursive: false,
                wait_index: Some(7),
                stream: false
            }
        );
        let KeysRequest::Write(Op::Put(p)) = parse(
            "PUT",
            "/a",
            &pairs(&[("value", "v"), ("ttl", ""), ("prevExist", "false")]),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.ttl, p.prev_exist, p.value.as_deref()),
            (None, Some(false), Some("v"))
        );
        let KeysRequest::Write(Op::Put(d)) =
            parse("PUT", "/d", &pairs(&[("dir", "true")])).unwrap()
        else {
            panic!()
        };
        assert!(d.dir && d.value.is_none());
        // The first occurrence wins (the body comes before the query).
        let KeysRequest::Write(Op::Put(f)) = parse(
            "PUT",
            "/a",
            &pairs(&[("value", "body"), ("value", "query")]),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(f.value.as_deref(), Some("body"));
    }

    #[test]
    fn go_booleans() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(t), Some(true));
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(f), Some(false));
        }
        assert_eq!(parse_bool("yes"), None);
    }

    /// What a fuzzer would check, over a deterministic sweep: any mix of etcd's parameters
    /// with odd values parses without panicking, and every refusal is a 2xx-series etcd code
    /// answered with HTTP 400.
    #[test]
    fn any_parameter_mix_is_answered() {
        const NAMES: &[&str] = &[
            "value",
            "ttl",
            "prevExist",
            "prevValue",
            "prevIndex",
            "dir",
            "recursive",
            "sorted",
            "quorum",
            "wait",
            "waitIndex",
            "stream",
            "refresh",
            "unknown",
        ];
        const VALUES: &[&str] = &[
            "",
            "0",
            "1",
            "-1",
            "true",
            "false",
            "T",
            "maybe",
            "18446744073709551616",
            "1.5",
            " 1",
            "\u{e9}",
            "%zz",
        ];
        let methods = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH"];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut q = Vec::new();
            let mut y = x;
            for _ in 0..(x % 5) {
                q.push((
                    NAMES[(y % NAMES.len() as u64) as usize].to_string(),
                    VALUES[((y >> 8) % VALUES.len() as u64) as usize].to_string(),
                ));
                y >>= 12;
            }
            let method = methods[((x >> 40) % methods.len() as u64) as usize];
            if let Err(e) = parse(method, "/k", &q) {
                assert!((200..300).contains(&e.error_code), "{method} {q:?}: {e:?}");
                assert_eq!(e.status(), 400, "{method} {q:?}: {e:?}");
            }
        }
    }
}
