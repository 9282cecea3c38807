//! WAF twin (`gateway.stages.waf.Waf`): `regex` / fancy-regex / aho-corasick over the prompt.
//! Texts over `DETACH_CHARS` bytes are scanned with the GIL released.
use crate::convert::type_name;
use crate::entry;
use crate::errors::{guard, invalid_input};
use gatewaylab_core::stages::waf::{self, Rule, RuleKind};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyMapping, PyString, PyTuple};

const DETACH_BYTES: usize = 4096;

#[pyclass(name = "Waf", module = "gateway._native", frozen)]
pub struct PyWaf {
    inner: waf::Waf,
    ids: Py<PyTuple>,
}

fn rule_from(obj: &Bound<'_, PyAny>) -> PyResult<Rule> {
    let Ok(m) = obj.cast::<PyMapping>() else {
        return Err(invalid_input(format!(
            "Waf: each rule must be a mapping, got {}",
            type_name(obj)
        )));
    };
    let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
        if m.contains(k)? {
            Ok(Some(m.get_item(k)?))
        } else {
            Ok(None)
        }
    };
    let id = match get("id")? {
        Some(v)
            if v.is_instance_of::<PyString>() && !v.cast::<PyString>()?.to_str()?.is_empty() =>
        {
            v.cast::<PyString>()?.to_str()?.to_string()
        }
        v => {
            return Err(invalid_input(format!(
                "Waf: rule id must be a non-empty str, got {}",
                v.map_or("None".into(), |v| v
                    .repr()
                    .map(|r| r.to_string())
                    .unwrap_or_default())
            )))
        }
    };
    let pattern = match get("pattern")? {
        Some(v)
            if v.is_instance_of::<PyString>() && !v.cast::<PyString>()?.to_str()?.is_empty() =>
        {
            v.cast::<PyString>()?.to_str()?.to_string()
        }
        _ => {
            return Err(invalid_input(format!(
                "Waf: rule {id:?}: pattern must be a non-empty str"
            )))
        }
    };
    let case_insensitive = match get("case_insensitive")? {
        None => false,
        Some(v) => match v.cast::<PyBool>() {
            Ok(b) => b.is_true(),
            Err(_) => {
                return Err(invalid_input(format!(
                    "Waf: rule {id:?}: case_insensitive must be a bool"
                )))
            }
        },
    };
    let kind = match get("kind")? {
        Some(v) if v.is_instance_of::<PyString>() && v.cast::<PyString>()?.to_str()? == "regex" => {
            RuleKind::Regex
        }
        Some(v)
            if v.is_instance_of::<PyString>() && v.cast::<PyString>()?.to_str()? == "literal" =>
        {
            RuleKind::Literal
        }
        _ => {
            return Err(invalid_input(format!(
                "Waf: rule {id:?}: kind must be 'regex' or 'literal'"
            )))
        }
    };
    Ok(Rule {
        id,
        kind,
        pattern,
        case_insensitive,
    })
}

#[pymethods]
impl PyWaf {
    /// Waf(rules: Sequence[Mapping]) — see gateway/stages/protocols.py.
    #[new]
    fn new(py: Python<'_>, rules: &Bound<'_, PyAny>) -> PyResult<Self> {
        let _c = entry!("waf.new");
        guard(|| {
            if rules.is_instance_of::<PyString>() || rules.cast::<PyMapping>().is_ok() {
                return Err(invalid_input(
                    "Waf: rules must be a sequence of rule mappings",
                ));
            }
            let mut rs = Vec::new();
            for r in rules
                .try_iter()
                .map_err(|_| invalid_input("Waf: rules must be a sequence of rule mappings"))?
            {
                rs.push(rule_from(&r?)?);
            }
            let ids: Vec<String> = rs.iter().map(|r| r.id.clone()).collect();
            let inner = waf::Waf::new(rs).map_err(|e| invalid_input(e.to_string()))?;
            Ok(Self {
                inner,
                ids: PyTuple::new(py, ids)?.unbind(),
            })
        })
    }

    /// The rule ids, in rule order.
    #[getter]
    fn ids(&self, py: Python<'_>) -> Py<PyTuple> {
        self.ids.clone_ref(py)
    }

    /// The id of the first rule (in rule order) that matches anywhere in `text`, or None.
    fn scan(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let mut c = entry!("waf.scan");
        guard(|| {
            let Ok(s) = text.cast::<PyString>() else {
                return Err(invalid_input(format!(
                    "Waf.scan: text must be str, got {}",
                    type_name(text)
                )));
            };
            // a lone surrogate is InvalidInput in both twins (not pyo3's UnicodeEncodeError)
            let s = s.to_str().map_err(|_| {
                invalid_input("Waf.scan: text is not valid Unicode (a lone surrogate)")
            })?;
            let inner = &self.inner;
            let hit = if s.len() > DETACH_BYTES {
                c.detach(py, || inner.scan(s).map(str::to_string))
            } else {
                inner.scan(s).map(str::to_string)
            };
            Ok(hit)
        })
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyWaf>()
}
