//! The OpenGraph preview page of a share's public display information.

/// The page: title, description, image and the share's link, each escaped.
pub(crate) fn page(
    title: Option<&str>,
    description: Option<&str>,
    image: Option<&str>,
    url: &str,
) -> String {
    let field = |v: Option<&str>| html_escape(v.unwrap_or(""));
    let (title, description, image) = (field(title), field(description), field(image));
    let url = html_escape(url);
    format!(
        "<!DOCTYPE html>\n<html prefix=\"og: https://ogp.me/ns#\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<meta property=\"og:title\" content=\"{title}\" />\n<meta property=\"og:type\" content=\"website\" />\n<meta property=\"og:description\" content=\"{description}\" />\n<meta property=\"og:url\" content=\"{url}\" />\n<meta property=\"og:image\" content=\"{image}\" />\n</head>\n<body>\n<h1>{title}</h1>\n<p>{description}</p>\n</body>\n</html>\n"
    )
}

/// Escapes text for HTML attribute and element content.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            html_escape("<script>alert(\"x\")</script>&'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        let page = page(Some("<b>"), None, None, "https://x.example/v1/m/1");
        assert!(page.contains("<title>&lt;b&gt;</title>"), "{page}");
    }
}
