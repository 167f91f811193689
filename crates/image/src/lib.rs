//! Container images for Stratus: OCI image layouts (`oci`), building and
//! importing images (`build`), eStargz conversion (`estargz`, `convert`),
//! the full-pull baseline (`extract`), blob access (`source`) and the FUSE
//! lazy root filesystem (`lazyfs`).

pub mod build;
pub mod cli;
pub mod convert;
pub mod digest;
pub mod estargz;
pub mod extract;
pub mod lazyfs;
pub mod oci;
pub mod paths;
pub mod source;
pub mod tarfmt;

/// An error and its sources, joined with `: ` (for messages and tests).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
