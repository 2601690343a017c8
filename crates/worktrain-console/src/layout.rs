//! The page shell: head (stylesheet, script, no inline code), navigation, header counts.

use maud::{DOCTYPE, Markup, html};

use crate::BASE;
use crate::assets::{CSS, JS};
use crate::auth::Browser;

/// The navigation entries: (path under the console, label).
const NAV: [(&str, &str); 7] = [
    ("/sessions", "Sessions"),
    ("/queue", "Queue"),
    ("/approvals", "Approvals"),
    ("/triggers", "Triggers"),
    ("/workflows", "Workflows"),
    ("/insights", "Insights"),
    ("/dispatch", "Dispatch"),
];

/// A full page for a logged-in browser. `active` is the navigation entry to mark.
pub fn page(title: &str, active: &str, browser: &Browser, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(browser.csrf);
                title { (title) " · worktrain" }
                link rel="stylesheet" href=(CSS.url());
                script src=(JS.url()) defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href={(BASE) "/sessions"} { "worktrain" }
                    nav aria-label="Console" {
                        ul {
                            @for (path, label) in NAV {
                                li {
                                    @if path == active {
                                        a href={(BASE) (path)} aria-current="page" { (label) }
                                    } @else {
                                        a href={(BASE) (path)} { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form method="post" action={(BASE) "/logout"} class="logout" {
                        input type="hidden" name="csrf" value=(browser.csrf);
                        button type="submit" { "Log out" }
                    }
                }
                main id="main" tabindex="-1" { (body) }
            }
        }
    }
}

/// A page without navigation (login, refusals).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · worktrain" }
                link rel="stylesheet" href=(CSS.url());
            }
            body { (body) }
        }
    }
}
