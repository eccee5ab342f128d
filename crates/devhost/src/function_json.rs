//! One function as `<name>/function.json` declares it: its trigger (HTTP or a Service Bus
//! queue) and its output bindings, with `%NAME%` resolved from the app settings. Each trigger
//! and each output type has its own reader; every problem is collected, none stops the rest.

use serde_json::{Map, Value};

use super::app_error::{BindingProblem, FunctionProblem};
use super::app_settings::AppSettings;
use super::lookup;

/// What starts a function.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Trigger {
    /// `httpTrigger`: served on the public port.
    Http {
        /// The trigger's binding name: `Data.<binding>`.
        binding: String,
        /// Upper-case; `None` accepts every method.
        methods: Option<Vec<String>>,
        /// The route template (the function's name when function.json has none).
        route: String,
    },
    /// `serviceBusTrigger` on a queue.
    ServiceBus { binding: String, queue: String },
}

/// Where an output binding's value goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OutputKind {
    /// `http`: the answer to the HTTP caller.
    Http,
    /// `serviceBus`: messages to a queue of the in-process bus.
    ServiceBus { queue: String },
    /// A binding type the dev host does not emulate: its value is dropped with a warning.
    Unsupported(String),
}

/// One output binding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutputBinding {
    /// The key in `Outputs` (or `$return` for `ReturnValue`).
    pub name: String,
    pub kind: OutputKind,
}

/// One function as read from `<name>/function.json`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FunctionDef {
    /// The folder name: the path the host POSTs to.
    pub name: String,
    pub trigger: Trigger,
    pub outputs: Vec<OutputBinding>,
}

/// The outcome of reading one function.json.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Parsed {
    Function(FunctionDef),
    /// Disabled, or a trigger the dev host does not run; the reason is shown at start.
    Skipped(String),
}

/// Interprets one function.json; every problem is returned, each prefixed with the function name.
pub(crate) fn parse_function(
    name: &str,
    doc: &Value,
    settings: &AppSettings,
) -> Result<Parsed, Vec<FunctionProblem>> {
    let mut problems = Vec::new();
    if !is_valid_function_name(name) {
        problems.push(FunctionProblem::InvalidName(name.to_owned()));
    }
    let Some(doc) = doc.as_object() else {
        return Err(vec![FunctionProblem::NotAnObject(name.to_owned())]);
    };
    if lookup::json_field(doc, "disabled").is_some_and(|v| v.as_bool() == Some(true)) {
        return Ok(Parsed::Skipped("disabled in function.json".to_owned()));
    }
    let bindings = match lookup::json_field(doc, "bindings") {
        Some(Value::Array(b)) => b,
        _ => return Err(vec![FunctionProblem::NoBindings(name.to_owned())]),
    };
    let mut reader = BindingsReader {
        function: name,
        trigger: None,
        skip_reason: None,
        outputs: Vec::new(),
        output_names: Vec::new(),
        problems,
    };
    for (index, binding) in bindings.iter().enumerate() {
        reader.read(index, binding, settings);
    }
    reader.finish()
}

/// One binding object with its `%NAME%` references resolved.
struct Binding {
    /// `name`: the key in `Data` or `Outputs`.
    name: String,
    /// `type`, as written (`httpTrigger`, `serviceBus`, …).
    kind: String,
    /// `direction`, lower-case.
    direction: String,
    properties: Map<String, Value>,
}

impl Binding {
    /// A string property, trimmed.
    fn text(&self, key: &str) -> Option<&str> {
        text_property(&self.properties, key)
    }

    /// A non-empty `queueName`.
    fn queue(&self) -> Option<String> {
        self.text("queueName")
            .filter(|q| !q.is_empty())
            .map(str::to_owned)
    }
}

fn text_property<'a>(properties: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    lookup::json_field(properties, key)
        .and_then(Value::as_str)
        .map(str::trim)
}

/// Walks a function's bindings, keeping its one trigger, its outputs and every problem.
struct BindingsReader<'a> {
    function: &'a str,
    trigger: Option<Trigger>,
    skip_reason: Option<String>,
    outputs: Vec<OutputBinding>,
    /// Every output binding name seen so far.
    output_names: Vec<String>,
    problems: Vec<FunctionProblem>,
}

impl BindingsReader<'_> {
    /// Reads binding number `index` (0-based) into the trigger or the outputs.
    fn read(&mut self, index: usize, raw: &Value, settings: &AppSettings) {
        let function = self.function;
        let fail = |problem| FunctionProblem::UnnamedBinding {
            function: function.to_owned(),
            number: index + 1,
            problem,
        };
        let Some(raw) = raw.as_object() else {
            self.problems.push(fail(BindingProblem::NotAnObject));
            return;
        };
        let properties = resolve_properties(raw, settings, &fail, &mut self.problems);
        let kind = text_property(&properties, "type")
            .unwrap_or_default()
            .to_owned();
        let direction = text_property(&properties, "direction")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let Some(name) = text_property(&properties, "name")
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
        else {
            self.problems.push(fail(BindingProblem::NoName(kind)));
            return;
        };
        let binding = Binding {
            name,
            kind,
            direction,
            properties,
        };
        if binding.kind.is_empty() {
            self.fail(&binding, BindingProblem::NoType);
        } else if binding.kind.to_ascii_lowercase().ends_with("trigger") {
            self.read_trigger(&binding);
        } else if binding.direction == "out" || binding.direction == "inout" {
            self.read_output(binding);
        } else if binding.direction != "in" {
            let direction = binding.direction.clone();
            self.fail(&binding, BindingProblem::Direction(direction));
        }
        // Input bindings other than the trigger are not emulated; the handler gets no Data for them.
    }

    fn fail(&mut self, binding: &Binding, problem: BindingProblem) {
        self.problems.push(FunctionProblem::Binding {
            function: self.function.to_owned(),
            binding: binding.name.clone(),
            problem,
        });
    }

    /// The function's one trigger: HTTP, a Service Bus queue, or another type (skipped).
    fn read_trigger(&mut self, binding: &Binding) {
        if self.trigger.is_some() || self.skip_reason.is_some() {
            self.fail(binding, BindingProblem::SecondTrigger);
            return;
        }
        match binding.kind.to_ascii_lowercase().as_str() {
            "httptrigger" => {
                let trigger = self.http_trigger(binding);
                self.trigger = Some(trigger);
            }
            "servicebustrigger" => match service_bus_trigger(binding) {
                Ok(trigger) => self.trigger = Some(trigger),
                Err(problem) => self.fail(binding, problem),
            },
            other => {
                self.skip_reason = Some(format!("its {other} is not emulated by handler dev"));
            }
        }
    }

    /// `httpTrigger`: its methods (upper-case) and route (the function's name when empty).
    fn http_trigger(&mut self, binding: &Binding) -> Trigger {
        let methods = match lookup::json_field(&binding.properties, "methods") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.is_empty() => None,
            Some(Value::Array(items)) => {
                let mut methods = Vec::new();
                for item in items {
                    match item.as_str().map(str::trim) {
                        Some(m) if !m.is_empty() && m.chars().all(|c| c.is_ascii_alphabetic()) => {
                            methods.push(m.to_ascii_uppercase());
                        }
                        _ => self.fail(binding, BindingProblem::InvalidMethod(item.clone())),
                    }
                }
                Some(methods)
            }
            Some(other) => {
                self.fail(binding, BindingProblem::MethodsNotAnArray(other.clone()));
                None
            }
        };
        // The host falls back to the function name for a missing or empty route.
        let route = binding
            .text("route")
            .filter(|r| !r.is_empty())
            .unwrap_or(self.function)
            .to_owned();
        Trigger::Http {
            binding: binding.name.clone(),
            methods,
            route,
        }
    }

    /// An output binding: the HTTP response, a Service Bus queue, or another type (dropped).
    fn read_output(&mut self, binding: Binding) {
        // A name is taken even by a binding with problems: a second one is a problem too.
        if self.output_names.contains(&binding.name) {
            self.fail(&binding, BindingProblem::DeclaredTwice);
            return;
        }
        self.output_names.push(binding.name.clone());
        let kind = match binding.kind.to_ascii_lowercase().as_str() {
            "http" => OutputKind::Http,
            "servicebus" => match service_bus_output(&binding) {
                Ok(kind) => kind,
                Err(problem) => {
                    self.fail(&binding, problem);
                    return;
                }
            },
            _ => OutputKind::Unsupported(binding.kind.clone()),
        };
        self.outputs.push(OutputBinding {
            name: binding.name,
            kind,
        });
    }

    fn finish(self) -> Result<Parsed, Vec<FunctionProblem>> {
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        if let Some(reason) = self.skip_reason {
            return Ok(Parsed::Skipped(reason));
        }
        match self.trigger {
            Some(trigger) => Ok(Parsed::Function(FunctionDef {
                name: self.function.to_owned(),
                trigger,
                outputs: self.outputs,
            })),
            None => Err(vec![FunctionProblem::NoTrigger(self.function.to_owned())]),
        }
    }
}

/// `serviceBusTrigger` on a queue (topics and sessions are not emulated).
fn service_bus_trigger(binding: &Binding) -> Result<Trigger, BindingProblem> {
    if binding.text("topicName").is_some() || binding.text("subscriptionName").is_some() {
        return Err(BindingProblem::TopicTrigger);
    }
    if lookup::json_field(&binding.properties, "isSessionsEnabled").and_then(Value::as_bool)
        == Some(true)
    {
        return Err(BindingProblem::Sessions);
    }
    let queue = binding.queue().ok_or(BindingProblem::NoQueueName)?;
    Ok(Trigger::ServiceBus {
        binding: binding.name.clone(),
        queue,
    })
}

/// `serviceBus` output to a queue (topics are not emulated).
fn service_bus_output(binding: &Binding) -> Result<OutputKind, BindingProblem> {
    if binding.text("topicName").is_some() {
        return Err(BindingProblem::TopicOutput);
    }
    let queue = binding.queue().ok_or(BindingProblem::NoQueueName)?;
    Ok(OutputKind::ServiceBus { queue })
}

/// A binding's properties with `%NAME%` resolved in every string (a property that cannot be
/// resolved is a problem, and left out).
fn resolve_properties(
    raw: &Map<String, Value>,
    settings: &AppSettings,
    fail: &dyn Fn(BindingProblem) -> FunctionProblem,
    problems: &mut Vec<FunctionProblem>,
) -> Map<String, Value> {
    let mut resolved = Map::new();
    for (key, value) in raw {
        match value {
            Value::String(text) => match settings.resolve(text) {
                Ok(text) => {
                    resolved.insert(key.clone(), Value::String(text));
                }
                Err(unset) => problems.push(fail(BindingProblem::Unresolved {
                    key: key.clone(),
                    unset,
                })),
            },
            other => {
                resolved.insert(key.clone(), other.clone());
            }
        }
    }
    resolved
}

/// The host's rule for function names (they become URL paths).
fn is_valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 128
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_settings::tests::settings;
    use serde_json::json;

    #[test]
    fn an_http_function_is_read_with_its_outputs() {
        let doc = json!({"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get", "post"], "authLevel": "anonymous", "route": "createUser"},
            {"type": "http", "direction": "out", "name": "res"},
            {"type": "serviceBus", "direction": "out", "name": "onboardingMessage", "queueName": "%QUEUE%", "connection": "ServiceBusConnection"}
        ]});
        let s = settings(&[("QUEUE", "onboarding")], &[]);
        let Parsed::Function(def) = parse_function("createUser", &doc, &s).unwrap() else {
            panic!("skipped")
        };
        assert_eq!(
            def.trigger,
            Trigger::Http {
                binding: "req".into(),
                methods: Some(vec!["GET".into(), "POST".into()]),
                route: "createUser".into()
            }
        );
        assert_eq!(
            def.outputs[1].kind,
            OutputKind::ServiceBus {
                queue: "onboarding".into()
            }
        );
    }

    #[test]
    fn a_missing_route_falls_back_to_the_function_name() {
        let doc = json!({"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req", "route": ""}]});
        let Parsed::Function(def) = parse_function("health", &doc, &settings(&[], &[])).unwrap()
        else {
            panic!()
        };
        assert!(
            matches!(def.trigger, Trigger::Http { ref route, methods: None, .. } if route == "health")
        );
    }

    #[test]
    fn a_service_bus_trigger_resolves_its_queue_name() {
        let doc = json!({"bindings": [{"type": "serviceBusTrigger", "direction": "in", "name": "message", "queueName": "%Q%", "connection": "C"}]});
        let Parsed::Function(def) =
            parse_function("send", &doc, &settings(&[], &[("Q", "jobs")])).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            def.trigger,
            Trigger::ServiceBus {
                binding: "message".into(),
                queue: "jobs".into()
            }
        );
    }

    #[test]
    fn every_problem_of_a_function_is_reported() {
        let doc = json!({"bindings": [
            {"type": "serviceBusTrigger", "direction": "in", "name": "m", "queueName": "%NOPE%"},
            {"type": "serviceBus", "direction": "out", "name": "o"}
        ]});
        let problems = parse_function("f", &doc, &settings(&[], &[])).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].to_string().contains("NOPE"), "{}", problems[0]);
    }

    #[test]
    fn an_unsupported_trigger_is_skipped_with_a_reason() {
        let doc = json!({"bindings": [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 * * * * *"}]});
        assert!(matches!(
            parse_function("tick", &doc, &settings(&[], &[])),
            Ok(Parsed::Skipped(_))
        ));
    }
}
