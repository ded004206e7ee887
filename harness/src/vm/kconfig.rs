//! What a kernel of one's own lacks: `vm/kernel.config` lists the options
//! a guest needs and what needs each; against a kernel's config this names
//! every missing option with the cases that will skip (or, for a `boot`
//! option, that no case can run). Transport-level: it takes the cases'
//! requirements as plain lists, so it imports nothing above `vm`.

/// One option of the fragment and what needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    /// CONFIG_...
    pub option: String,
    /// boot, namespace:NAME, controller:NAME, option, swap.
    pub needs: Vec<String>,
}

/// The options of a fragment (`CONFIG_X=y  # needs ...` lines).
pub fn parse_fragment(text: &str) -> Vec<Needed> {
    text.lines()
        .filter_map(|l| {
            let (setting, comment) = l.split_once('#').unwrap_or((l, ""));
            let option = setting.split_once('=')?.0.trim();
            option.starts_with("CONFIG_").then(|| Needed {
                option: option.to_string(),
                needs: comment.split_whitespace().map(String::from).collect(),
            })
        })
        .collect()
}

/// Whether `option` is y or m in the config text `config`.
fn set(config: &str, option: &str) -> bool {
    config.lines().any(|l| {
        l.strip_prefix(option)
            .and_then(|r| r.strip_prefix('='))
            .is_some_and(|v| v == "y" || v == "m")
    })
}

/// What one case asks of the kernel, as the case model says it.
#[derive(Debug, Clone, Default)]
pub struct CaseNeeds {
    /// The case.
    pub id: String,
    /// Namespaces it asks for.
    pub namespaces: Vec<String>,
    /// Controllers it asks for.
    pub controllers: Vec<String>,
    /// Options it names.
    pub options: Vec<String>,
    /// Whether it needs swap.
    pub swap: bool,
}

/// Each option of `fragment` missing from `config`, with the cases that
/// will skip for it (every case, for a boot option).
pub fn gaps(config: &str, fragment: &[Needed], cases: &[CaseNeeds]) -> Vec<(String, Vec<String>)> {
    fragment
        .iter()
        .filter(|n| !set(config, &n.option))
        .map(|n| {
            let hit = |c: &CaseNeeds| {
                n.needs.iter().any(|need| match need.split_once(':') {
                    Some(("namespace", ns)) => c.namespaces.iter().any(|x| x == ns),
                    Some(("controller", ctl)) => c.controllers.iter().any(|x| x == ctl),
                    _ if need == "option" => c.options.contains(&n.option),
                    _ if need == "swap" => c.swap,
                    _ => need == "boot",
                })
            };
            let ids = cases
                .iter()
                .filter(|c| hit(c))
                .map(|c| c.id.clone())
                .collect();
            (n.option.clone(), ids)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projects_fragment_parses_and_every_option_says_what_needs_it() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm/kernel.config"),
        )
        .expect("vm/kernel.config");
        let f = parse_fragment(&text);
        assert!(f.len() > 30);
        for n in &f {
            assert!(
                !n.needs.is_empty(),
                "{} says nothing of what needs it",
                n.option
            );
        }
    }

    #[test]
    fn a_missing_option_names_the_cases_it_skips() {
        let fragment = parse_fragment(
            "CONFIG_USER_NS=y # namespace:user\nCONFIG_MEMCG=y # controller:memory\nCONFIG_TMPFS=y # boot\nCONFIG_OVERLAY_FS=m # option\n",
        );
        let cases = vec![
            CaseNeeds {
                id: "NS-USER-1".into(),
                namespaces: vec!["user".into()],
                ..Default::default()
            },
            CaseNeeds {
                id: "CG-MEM-1".into(),
                controllers: vec!["memory".into()],
                ..Default::default()
            },
            CaseNeeds {
                id: "FS-OVL-1".into(),
                options: vec!["CONFIG_OVERLAY_FS".into()],
                ..Default::default()
            },
        ];
        let config = "CONFIG_MEMCG=y\nCONFIG_TMPFS=y\n# CONFIG_USER_NS is not set\n";
        assert_eq!(
            gaps(config, &fragment, &cases),
            vec![
                ("CONFIG_USER_NS".to_string(), vec!["NS-USER-1".to_string()]),
                (
                    "CONFIG_OVERLAY_FS".to_string(),
                    vec!["FS-OVL-1".to_string()]
                ),
            ]
        );
        let all = gaps("", &fragment, &cases);
        assert_eq!(
            all[2],
            (
                "CONFIG_TMPFS".to_string(),
                vec!["NS-USER-1".into(), "CG-MEM-1".into(), "FS-OVL-1".into()]
            )
        );
    }
}
