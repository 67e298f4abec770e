//! Markdown from the board (task instructions, results) as HTML that is safe to put in a
//! page: rendered by pulldown-cmark, with raw HTML shown as text and links and images kept
//! only when their URL is http, https, mailto (links only) or relative. The one place board
//! text becomes `PreEscaped`: everything else in the control room goes through maud's escaping.

use maud::{Markup, PreEscaped};
use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, TagEnd, html};

/// `text` as sanitized HTML.
pub fn render(text: &str) -> Markup {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_SMART_PUNCTUATION;
    // For each open link or image: whether it is kept (its end must match).
    let mut open: Vec<bool> = Vec::new();
    let events = Parser::new_ext(text, options).filter_map(|e| match e {
        // Raw HTML, block or inline, is shown as the text it is.
        Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let keep = allowed(&dest_url, true);
            open.push(keep);
            keep.then_some(Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }))
        }
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            // An image that is not kept shows its alt text.
            let keep = allowed(&dest_url, false);
            open.push(keep);
            keep.then_some(Event::Start(Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            }))
        }
        Event::End(end @ (TagEnd::Link | TagEnd::Image)) => {
            open.pop().unwrap_or(false).then_some(Event::End(end))
        }
        other => Some(other),
    });
    let mut out = String::with_capacity(text.len() * 3 / 2);
    html::push_html(&mut out, events);
    PreEscaped(out)
}

/// Whether a link (`link`) or image URL may stay: http, https, mailto (links only), or
/// relative (no scheme). Tabs and newlines are dropped first, as browsers do when they read a
/// URL (`java\tscript:` is `javascript:` to them), and so are leading spaces and controls.
fn allowed(url: &CowStr, link: bool) -> bool {
    let cleaned: String = url
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let cleaned = cleaned.trim_start_matches(|c: char| c <= ' ');
    if cleaned.chars().any(|c| c.is_control()) {
        return false;
    }
    // A scheme ends at the first ':' before any '/', '?' or '#'.
    let scheme_end = cleaned.find([':', '/', '?', '#']);
    match scheme_end {
        Some(i) if cleaned[i..].starts_with(':') => {
            let scheme = cleaned[..i].to_ascii_lowercase();
            scheme == "http" || scheme == "https" || (link && scheme == "mailto")
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(text: &str) -> String {
        render(text).into_string()
    }

    #[test]
    fn markdown_is_rendered() {
        let out = html(
            "# Task\n\n- one\n- **two**\n\n`code` and [docs](docs/api.md)\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
        );
        assert!(out.contains("<h1>Task</h1>"), "{out}");
        assert!(out.contains("<li><strong>two</strong></li>"), "{out}");
        assert!(out.contains("<code>code</code>"), "{out}");
        assert!(out.contains(r#"<a href="docs/api.md">docs</a>"#), "{out}");
        assert!(out.contains("<table>"), "{out}");
    }

    #[test]
    fn raw_html_is_shown_as_text() {
        for hostile in [
            "<script>alert(1)</script>",
            "before <script>alert(1)</script> after",
            "<img src=x onerror=alert(1)>",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<style>body{display:none}</style>",
            "<svg onload=alert(1)>",
        ] {
            let out = html(hostile);
            for tag in ["<script", "<img", "<iframe", "<a ", "<style", "<svg"] {
                assert!(!out.contains(tag), "{hostile:?} -> {out}");
            }
            assert!(out.contains("&lt;"), "{hostile:?} is shown: {out}");
        }
        assert!(
            html("<script>alert(1)</script>").contains("&lt;script&gt;alert(1)&lt;/script&gt;")
        );
    }

    #[test]
    fn only_safe_link_and_image_urls_are_kept() {
        for bad in [
            "[x](javascript:alert(1))",
            "[x](JaVaScRiPt:alert(1))",
            "[x](java&#x09;script:alert(1))",
            "[x](&#x20;javascript:alert(1))",
            "[x](vbscript:msgbox)",
            "[x](data:text/html;base64,PHNjcmlwdD4=)",
            "[x](file:///etc/passwd)",
            "<javascript:alert(1)>",
            "[x][r]\n\n[r]: javascript:alert(1)",
            "![x](javascript:alert(1))",
            "![x](data:image/svg+xml,<svg onload=alert(1)>)",
            "![x](mailto:a@example.com)",
        ] {
            let out = html(bad);
            assert!(!out.contains("href="), "{bad:?} -> {out}");
            assert!(!out.contains("src="), "{bad:?} -> {out}");
            assert!(
                out.contains('x') || bad.starts_with('<'),
                "the text stays: {out}"
            );
        }
        // The alt text of a refused image stays, and what follows renders.
        let out = html("![the alt](javascript:x) and [ok](https://example.com/a?b=1&c=2)");
        assert!(out.contains("the alt"), "{out}");
        assert!(
            out.contains(r#"<a href="https://example.com/a?b=1&amp;c=2">ok</a>"#),
            "{out}"
        );
        for good in [
            "[x](http://example.com)",
            "[x](HTTPS://example.com)",
            "[x](mailto:ops@example.com)",
            "[x](docs/a.md)",
            "[x](/tasks/1)",
            "[x](#part)",
            "[x](?q=1)",
        ] {
            let out = html(good);
            assert!(out.contains("href="), "{good:?} -> {out}");
        }
        let out = html("![diagram](img/plan.png)");
        assert!(
            out.contains(r#"<img src="img/plan.png" alt="diagram""#),
            "{out}"
        );
    }

    #[test]
    fn quotes_in_urls_and_titles_cannot_break_out() {
        let out = html(r#"[x](https://e.example/"onmouseover="alert(1) "t\"itle")"#);
        assert!(!out.contains("\"onmouseover"), "{out}");
        let out = html("[x](<https://e.example/a b\">)");
        assert!(!out.contains("b\">"), "{out}");
    }
}
