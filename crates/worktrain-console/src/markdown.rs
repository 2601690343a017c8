//! Untrusted Markdown to safe HTML.
//!
//! Everything an agent or a webhook wrote (notes, goals, artifacts, blockers) is
//! untrusted. It is parsed with `pulldown-cmark` with raw HTML turned into text (so
//! `<script>` shows as text), then the produced HTML goes through `ammonia`'s allow-list:
//! no script, no event-handler attributes, no `style`, and links only to `http`, `https`
//! and `mailto` (a `javascript:` link loses its `href`). Links get
//! `rel="noopener noreferrer nofollow"`.

use std::collections::HashSet;

use maud::{Markup, PreEscaped};
use pulldown_cmark::{Event, Options, Parser};

/// Render untrusted Markdown as sanitised HTML.
pub fn render(text: &str) -> Markup {
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    // Raw HTML in the source becomes visible text, never markup.
    let events = Parser::new_ext(text, opts).map(|e| match e {
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        other => other,
    });
    let mut html = String::with_capacity(text.len() + text.len() / 4);
    pulldown_cmark::html::push_html(&mut html, events);
    PreEscaped(clean(&html))
}

/// The sanitiser applied to rendered Markdown.
fn clean(html: &str) -> String {
    let schemes: HashSet<&str> = ["http", "https", "mailto"].into_iter().collect();
    ammonia::Builder::default()
        .url_schemes(schemes)
        .link_rel(Some("noopener noreferrer nofollow"))
        .url_relative(ammonia::UrlRelative::Deny)
        .clean(html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn markdown_renders() {
        let h = render("# Title\n\n*em* and `code`\n\n- a\n- b\n").into_string();
        assert!(h.contains("<h1>Title</h1>"), "{h}");
        assert!(h.contains("<em>em</em>"), "{h}");
        assert!(h.contains("<code>code</code>"), "{h}");
        assert!(h.contains("<li>a</li>"), "{h}");
    }

    #[test]
    fn script_image_handlers_and_javascript_links_are_inert() {
        let h = render(
            "<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n\
             [click](javascript:alert(3)) and <a href=\"javascript:alert(4)\">raw</a>\n\n\
             ![img](javascript:alert(5))",
        )
        .into_string();
        assert!(!h.contains("<script"), "{h}");
        assert!(!h.contains("<img src=\"x\""), "{h}");
        // As an attribute (the serialiser always quotes); as escaped text it is harmless.
        assert!(!h.contains("onerror=\""), "{h}");
        assert!(h.contains("&lt;img src=x onerror=alert(2)&gt;"), "{h}");
        let lower = h.to_lowercase();
        assert!(!lower.contains("<a href=\"javascript"), "{h}");
        assert!(!lower.contains("src=\"javascript"), "{h}");
        // The Markdown link survives as text without a target.
        assert!(
            h.contains("<a rel=\"noopener noreferrer nofollow\">click</a>"),
            "{h}"
        );
        // The raw HTML is shown as text.
        assert!(h.contains("&lt;script&gt;"), "{h}");
    }

    #[test]
    fn safe_links_keep_their_target_and_get_rel() {
        let h = render("[docs](https://example.com/x)").into_string();
        assert!(h.contains("href=\"https://example.com/x\""), "{h}");
        assert!(h.contains("rel=\"noopener noreferrer nofollow\""), "{h}");
    }
}
