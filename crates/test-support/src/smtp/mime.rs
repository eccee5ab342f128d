//! Reading what lettre sends, through the `mailparse` crate: headers, multipart bodies, and
//! decoded part bodies.

/// One MIME entity: its headers and its body.
#[derive(Clone, Debug)]
pub struct MimePart {
    headers: Vec<(String, String)>,
    /// For a leaf, the decoded body; for a multipart, empty.
    pub body: String,
    children: Vec<MimePart>,
}

impl MimePart {
    /// A header's value, name matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type, lowercased, without parameters (`text/plain` by default).
    pub fn media_type(&self) -> String {
        self.header("Content-Type")
            .and_then(|v| v.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "text/plain".to_owned())
    }

    /// The leaf parts, depth first (the entity itself when it is not multipart).
    pub fn leaves(&self) -> Vec<MimePart> {
        if self.children.is_empty() {
            vec![self.clone()]
        } else {
            self.children.iter().flat_map(MimePart::leaves).collect()
        }
    }
}

/// Parses a message (or a part of one).
pub fn parse(raw: &str) -> MimePart {
    let parsed = mailparse::parse_mail(raw.as_bytes()).expect("a parsable MIME message");
    from_parsed(&parsed)
}

fn from_parsed(parsed: &mailparse::ParsedMail<'_>) -> MimePart {
    let children: Vec<MimePart> = parsed.subparts.iter().map(from_parsed).collect();
    MimePart {
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.get_key(), h.get_value()))
            .collect(),
        body: if children.is_empty() {
            parsed.get_body().expect("a decodable body")
        } else {
            String::new()
        },
        children,
    }
}
