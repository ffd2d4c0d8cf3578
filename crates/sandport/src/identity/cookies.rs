//! Cookie parsing by exact name (RFC 6265 §5.4 `Cookie` header).

/// Every value of cookie `name` across all `Cookie` headers, in order. Names match exactly:
/// `xid_token` is not `id_token`. Empty values, and values that are not UTF-8, are skipped.
///
/// Headers are read as bytes: one cookie with a non-ASCII byte (page script can set `x=é`)
/// must not hide the other cookies of its header.
pub fn cookie_values<'a>(
    headers: &'a http::HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let (key, value) = split_pair(pair)?;
            (key == name.as_bytes())
                .then(|| std::str::from_utf8(value).ok())
                .flatten()
                .filter(|v| !v.is_empty())
        })
}

/// Removes the cookies named in `names` from every `Cookie` header, dropping headers left
/// empty. Headers that name none of them are left as they are (the common case costs one scan).
///
/// Headers are read as bytes, like [`cookie_values`]: a header that is not ASCII is forwarded
/// all the same, so it must lose sandport's cookies all the same.
pub fn remove_cookies(headers: &mut http::HeaderMap, names: &[&str]) {
    let affected = headers.get_all(http::header::COOKIE).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b';')
            .any(|pair| is_named(pair, names))
    });
    if !affected {
        return;
    }
    let kept: Vec<http::HeaderValue> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| without_named(value, names))
        .collect();
    headers.remove(http::header::COOKIE);
    for value in kept {
        headers.append(http::header::COOKIE, value);
    }
}

/// Whether a cookie pair (or a bare name without `=`) carries one of `names`.
fn is_named(pair: &[u8], names: &[&str]) -> bool {
    let name = split_pair(pair).map_or(pair.trim_ascii(), |(name, _)| name);
    names.iter().any(|own| own.as_bytes() == name)
}

/// One `Cookie` value without the pairs named in `names`; `None` when no pair is left, so
/// no empty header is forwarded.
fn without_named(value: &http::HeaderValue, names: &[&str]) -> Option<http::HeaderValue> {
    let pairs: Vec<&[u8]> = value
        .as_bytes()
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty() && !is_named(pair, names))
        .collect();
    (!pairs.is_empty())
        .then(|| http::HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok())
        .flatten()
}

/// One `name=value` pair, both trimmed of spaces and tabs; `None` without `=`.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = pair.iter().position(|&b| b == b'=')?;
    Some((pair[..at].trim_ascii(), pair[at + 1..].trim_ascii()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for cookie in cookies {
            headers.append(http::header::COOKIE, cookie.parse().unwrap());
        }
        headers
    }

    #[test]
    fn values_by_exact_name_in_order() {
        let h = headers(&[
            "xid_token=no; id_token=a",
            "id_token=; id_token = b ;other=c",
        ]);
        assert_eq!(
            cookie_values(&h, "id_token").collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(cookie_values(&h, "other").collect::<Vec<_>>(), ["c"]);
        assert_eq!(cookie_values(&h, "token").count(), 0);
    }

    #[test]
    fn removal_keeps_the_others() {
        let mut h = headers(&["a=1; sandport_token=s; b=2", "sandport_token=t"]);
        remove_cookies(&mut h, &["sandport_token"]);
        let left: Vec<_> = h
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["a=1; b=2"]);
    }

    // Found by the `identity` and `headers` fuzz targets: a header with one non-ASCII cookie
    // was skipped whole, so sandport's own cookies in it reached the upstream, and the
    // credentials in it were not seen.
    #[test]
    fn non_ascii_headers_are_read_as_bytes() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            http::HeaderValue::from_bytes(b"id_token=a; x=\xc3\xa9; sandport_token=t").unwrap(),
        );
        assert_eq!(cookie_values(&h, "id_token").collect::<Vec<_>>(), ["a"]);
        assert_eq!(cookie_values(&h, "x").collect::<Vec<_>>(), ["\u{e9}"]);
        remove_cookies(&mut h, &["id_token", "sandport_token"]);
        let left: Vec<_> = h.get_all("cookie").iter().map(|v| v.as_bytes()).collect();
        assert_eq!(left, [&b"x=\xc3\xa9"[..]]);
    }
}
