//! Reading settings one at a time while collecting every problem, and refusing values that only
//! look like values (an unresolved Key Vault reference, the example file's placeholder).

/// Prefix of an app setting that Azure could not resolve from Key Vault: the value reaches the
/// process verbatim, and using it as a password or key would fail in confusing ways later.
const KEY_VAULT_REFERENCE: &str = "@Microsoft.KeyVault(";

/// One setting's value as read: absent (or blank, as portals and `.env` files often leave
/// them), unusable as it stands (already reported), or there.
pub(super) enum Value {
    Missing,
    Reported,
    Present(String),
}

/// Reads settings one by one and collects every problem, so one run reports all of them.
pub(super) struct Reader<'a> {
    pub(super) lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Under the host every required setting must be there; `handler dev` fills them in.
    pub(super) serving: bool,
    pub(super) problems: Vec<String>,
}

impl Reader<'_> {
    /// A setting's value, refusing the two kinds of text that only look like values: an
    /// unresolved Key Vault reference and the example file's `<placeholder>`.
    pub(super) fn value(&mut self, name: &str) -> Value {
        let Some(value) = (self.lookup)(name).filter(|v| !v.trim().is_empty()) else {
            return Value::Missing;
        };
        let trimmed = value.trim();
        if trimmed.starts_with(KEY_VAULT_REFERENCE) {
            self.problems.push(format!(
                "{name} is an unresolved Key Vault reference: check that the app's \
                 keyVaultReferenceIdentity has the Key Vault Secrets User role on the vault \
                 and that the reference names an existing secret"
            ));
            return Value::Reported;
        }
        // `<…>` is how local.settings.json.example marks a value to fill in; a placeholder used
        // as a key would sign tokens with text anyone can read.
        if trimmed.starts_with('<') && trimmed.ends_with('>') {
            self.problems.push(format!(
                "{name} still holds the placeholder from local.settings.json.example: set a \
                 real value or remove the line"
            ));
            return Value::Reported;
        }
        Value::Present(value)
    }

    /// A setting that may be left out: its parsed value, or `None` when absent or refused (the
    /// refusal, whose text `parse` writes, is recorded).
    pub(super) fn optional<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.value(name) {
            Value::Present(raw) => self.parsed(parse(&raw)),
            Value::Missing | Value::Reported => None,
        }
    }

    /// A setting the host must be given: as [`optional`](Self::optional), and when serving, a
    /// missing one is a problem too, with `example` saying what to set.
    pub(super) fn required<T>(
        &mut self,
        name: &str,
        example: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.value(name);
        self.require(name, example, value, parse)
    }

    /// [`required`](Self::required) for a value already read. A value refused as it stood
    /// (a Key Vault reference, a placeholder) is reported once, not also as missing.
    pub(super) fn require<T>(
        &mut self,
        name: &str,
        example: &str,
        value: Value,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match value {
            Value::Present(raw) => self.parsed(parse(&raw)),
            Value::Reported => None,
            Value::Missing => {
                if self.serving {
                    self.problems.push(format!("{name} is not set: {example}"));
                }
                None
            }
        }
    }

    pub(super) fn parsed<T>(&mut self, parsed: Result<T, String>) -> Option<T> {
        parsed.map_err(|why| self.problems.push(why)).ok()
    }
}
