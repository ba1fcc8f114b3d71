//! AssignImage's image references (Gatekeeper's `pkg/mutation/mutators/assignimage/imageparser.go`):
//! `domain/path:tag` or `domain/path@digest`, where the first component is a domain only when
//! it has a `.` or `:` or is `localhost`.

use regex::Regex;

/// Domain, path and tag (with its leading `:` or `@`) of an image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Image<'a> {
    domain: &'a str,
    path: &'a str,
    tag: &'a str,
}

fn split_domain(name: &str) -> (&str, &str) {
    match name.find('/') {
        Some(i) if name[..i].contains(['.', ':']) || &name[..i] == "localhost" => {
            (&name[..i], &name[i + 1..])
        }
        _ => ("", name),
    }
}

fn split_tag(rest: &str) -> (&str, &str) {
    match rest.find([':', '@']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

fn parse(reference: &str) -> Image<'_> {
    let (domain, rest) = split_domain(reference);
    let (path, tag) = split_tag(rest);
    Image { domain, path, tag }
}

/// `old` with each of `domain`, `path`, `tag` that is set put in place of its component.
pub fn mutate(domain: &str, path: &str, tag: &str, old: &str) -> String {
    let old = parse(old);
    let domain = if domain.is_empty() {
        old.domain
    } else {
        domain
    };
    let path = if path.is_empty() { old.path } else { path };
    let tag = if tag.is_empty() { old.tag } else { tag };
    let mut out = String::new();
    if !domain.is_empty() {
        out.push_str(domain);
        out.push('/');
    }
    out.push_str(path);
    out.push_str(tag);
    out
}

fn regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("internal: image pattern: {e}"))
}

/// Gatekeeper's checks of `assignDomain`, `assignPath` and `assignTag`, with its messages.
pub fn validate(domain: &str, path: &str, tag: &str) -> Result<(), String> {
    if domain.is_empty() && path.is_empty() && tag.is_empty() {
        return Err("at least one of [assignDomain, assignPath, assignTag] must be set".into());
    }
    // Go's `\w` is ASCII only.
    let w = "[0-9A-Za-z_]";
    let domain_re = regex(&format!(
        r"(^{w}[0-9A-Za-z_\-]*\.[0-9A-Za-z_\-.]*{w}(:\d+)?$)|(^localhost(:\d+)?$)"
    ))?;
    if !domain.is_empty() {
        if !domain_re.is_match(domain) {
            return Err(format!(
                "assignDomain {domain:?} must be a fully-qualified domain name or localhost"
            ));
        }
        let with_slash = format!("{domain}/");
        if split_domain(&with_slash) != (domain, "") {
            return Err(format!(
                "domain {domain:?} could not be recognized as a valid domain"
            ));
        }
    }
    let path_re = regex(r"^[a-z0-9]+(?:(?:(?:[._/]|__|[-]*)[a-z0-9]+)+)?")?;
    if !path.is_empty() && path_re.find(path).map(|m| m.as_str()) != Some(path) {
        return Err(format!(
            "assignPath {path:?} must be a valid docker image path"
        ));
    }
    let tag_re = regex(&format!(
        r"(^:{w}[0-9A-Za-z_.\-]{{0,127}}$)|(^@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9A-Fa-f]{{32,}}$)"
    ))?;
    if !tag.is_empty() && (!tag_re.is_match(tag) || split_tag(tag) != ("", tag)) {
        return Err(format!(
            "assignTag {tag:?} must be a valid docker image tag or digest starting with ':' or '@'"
        ));
    }
    if domain.is_empty() && !split_domain(path).0.is_empty() {
        return Err(format!(
            "assignDomain must be set if the first part of assignPath {path:?} can be interpreted as part of a domain"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_replaced_separately() {
        let digest = "@sha256:abcde67890123456789abc345678901a";
        assert_eq!(
            mutate("my.registry.io", "repo/app", digest, "nginx"),
            format!("my.registry.io/repo/app{digest}")
        );
        assert_eq!(
            mutate("", "", digest, "nginx:1.2"),
            format!("nginx{digest}")
        );
        assert_eq!(
            mutate("my.registry.io", "", "", "docker.io/library/nginx:1"),
            "my.registry.io/library/nginx:1"
        );
        assert_eq!(
            mutate(
                "localhost:5000",
                "",
                "",
                "my.registry.io:2000/repo/app:latest"
            ),
            "localhost:5000/repo/app:latest"
        );
        assert_eq!(mutate("", "", ":v2", "library/nginx"), "library/nginx:v2");
        assert_eq!(mutate("a.io", "", "", ""), "a.io/");
    }

    #[test]
    fn parameters_are_checked_as_gatekeeper_does() {
        assert!(validate("", "", "").is_err());
        assert!(validate("my.registry.io", "repo/app", ":latest").is_ok());
        assert!(validate("localhost:5000", "", "").is_ok());
        assert!(validate("registry", "", "").is_err());
        assert!(validate("", "Repo", "").is_err());
        assert!(validate("", "my.repo.lib/app", "").is_err());
        assert!(validate("", "", "latest").is_err());
        assert!(validate("", "", "@sha256:abcde67890123456789abc345678901a").is_ok());
        assert!(validate("", "", "@sha256:short").is_err());
    }
}
