//! Cookie parsing by exact name (RFC 6265 §5.4 `Cookie` header).

/// Every value of cookie `name` across all `Cookie` headers, in order. Names match exactly:
/// `xid_token` is not `id_token`. Empty values are skipped.
pub fn cookie_values<'a>(
    headers: &'a http::HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(move |pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name)
                .then(|| value.trim())
                .filter(|v| !v.is_empty())
        })
}

/// Removes the cookies named in `names` from every `Cookie` header, dropping headers left
/// empty. Headers that name none of them are left as they are (the common case costs one scan).
pub fn remove_cookies(headers: &mut http::HeaderMap, names: &[&str]) {
    let named = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name).trim();
        names.contains(&name)
    };
    let affected = headers
        .get_all(http::header::COOKIE)
        .iter()
        .any(|value| value.to_str().is_ok_and(|text| text.split(';').any(&named)));
    if !affected {
        return;
    }
    let kept: Vec<http::HeaderValue> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| {
            let Ok(text) = value.to_str() else {
                // Not text: keep it as it is rather than guess.
                return Some(value.clone());
            };
            let pairs: Vec<&str> = text
                .split(';')
                .map(str::trim)
                .filter(|pair| !pair.is_empty() && !named(pair))
                .collect();
            (!pairs.is_empty())
                .then(|| http::HeaderValue::from_str(&pairs.join("; ")).ok())
                .flatten()
        })
        .collect();
    headers.remove(http::header::COOKIE);
    for value in kept {
        headers.append(http::header::COOKIE, value);
    }
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
}
