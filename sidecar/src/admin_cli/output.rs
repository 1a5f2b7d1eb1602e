//! Output for people (aligned tables) and for scripts (JSON; CSV for payment lists), and the
//! time filters shared by the subcommands.

use crate::admin_cli::exit::{Failure, Result};
use crate::calendar;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl Format {
    pub fn new(json: bool) -> Self {
        if json {
            Format::Json
        } else {
            Format::Table
        }
    }
}

/// Pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::new(super::exit::SIDECAR, format!("encoding JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// A table with left-aligned columns (right-aligned where `right[i]`), on stdout.
pub fn table(headers: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&width).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                out.push_str(&format!("{cell:>w$}"));
            } else {
                out.push_str(&format!("{cell:<w$}"));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A `--since`/`--until` value: unix seconds, or a UTC day `YYYY-MM-DD` (its midnight).
pub fn parse_time(s: &str) -> std::result::Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    calendar::parse_day(s)
        .map(|d| d * 86_400)
        .ok_or_else(|| format!("{s:?} is neither unix seconds nor a date YYYY-MM-DD"))
}

/// Query parameters for the set options.
pub fn time_query(since: Option<i64>, until: Option<i64>) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(s) = since {
        q.push(("since", s.to_string()));
    }
    if let Some(u) = until {
        q.push(("until", u.to_string()));
    }
    q
}
