//! Pure: one name's line in a hosts file (`/etc/hosts` format: an address,
//! then names, then an optional `#` comment).

/// The names a line maps, and its address, comments left out.
fn fields(line: &str) -> Option<(&str, Vec<&str>)> {
    let data = line.split('#').next().unwrap_or("");
    let mut words = data.split_whitespace();
    let address = words.next()?;
    Some((address, words.collect()))
}

/// The address the first line that maps `name` gives it, as a resolver reads it.
pub fn address_of(content: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(content).ok()?;
    text.lines().find_map(|l| fields(l).filter(|(_, names)| names.contains(&name)).map(|(a, _)| a.to_string()))
}

/// `content` with exactly one line mapping `name`, to `address`, marked with
/// `tag`. That line takes the place of the first line that mapped the name
/// (or goes at the end); the name leaves every other line, and a line left
/// with no name goes. Every other byte stays. `None`: not UTF-8 text.
pub fn point(content: &[u8], name: &str, address: &str, tag: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(content).ok()?;
    let ours = format!("{address}\t{name}\t# {tag}");
    let mut out = String::with_capacity(text.len() + ours.len() + 1);
    let mut placed = false;
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let Some((_, names)) = fields(body).filter(|(_, names)| names.contains(&name)) else {
            out.push_str(line);
            continue;
        };
        if !placed {
            out.push_str(&ours);
            out.push('\n');
            placed = true;
        }
        if names.iter().any(|n| *n != name) {
            // Other names keep their line; only this one leaves it.
            let kept: Vec<&str> = body.split_inclusive(char::is_whitespace).filter(|w| w.trim() != name).collect();
            out.push_str(kept.concat().trim_end());
            out.push_str(end);
        }
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&ours);
        out.push('\n');
    }
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "127.0.0.1\tlocalhost\n# the farm\n10.0.0.5 web-a web-a.example # old\n10.0.0.9 db\n";

    #[test]
    fn the_first_line_that_maps_a_name_gives_its_address() {
        assert_eq!(address_of(HOSTS.as_bytes(), "web-a").as_deref(), Some("10.0.0.5"));
        assert_eq!(address_of(HOSTS.as_bytes(), "old"), None, "a comment maps nothing");
        assert_eq!(address_of(HOSTS.as_bytes(), "web"), None, "names are whole words");
    }

    #[test]
    fn pointing_a_name_replaces_its_line_in_place_and_keeps_the_other_names() {
        let out = String::from_utf8(point(HOSTS.as_bytes(), "web-a", "10.0.0.6", "farmctl service web").unwrap()).unwrap();
        assert_eq!(out, "127.0.0.1\tlocalhost\n# the farm\n10.0.0.6\tweb-a\t# farmctl service web\n10.0.0.5 web-a.example # old\n10.0.0.9 db\n");
        assert_eq!(address_of(out.as_bytes(), "web-a").as_deref(), Some("10.0.0.6"));
        // Pointing it again changes nothing: the plan is clean once applied.
        assert_eq!(point(out.as_bytes(), "web-a", "10.0.0.6", "farmctl service web").unwrap(), out.as_bytes());
    }

    #[test]
    fn a_name_mapped_twice_keeps_one_line_and_a_missing_name_is_appended() {
        let twice = "10.0.0.5 web-a\n10.0.0.7 web-a\n";
        assert_eq!(point(twice.as_bytes(), "web-a", "10.0.0.7", "t").unwrap(), b"10.0.0.7\tweb-a\t# t\n");
        assert_eq!(point(b"127.0.0.1 localhost", "web-a", "10.0.0.7", "t").unwrap(), b"127.0.0.1 localhost\n10.0.0.7\tweb-a\t# t\n");
        assert_eq!(point(&[0xff, b'\n'], "web-a", "10.0.0.7", "t"), None);
    }
}
