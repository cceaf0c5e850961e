//! Which async runtime the command runs on: smol (default) or tokio.
//!
//! Both run the same node (everything lives in mau-net); the choice only
//! matters to embedders who want to test the adapter they will use.

use std::future::Future;

use mau_net::Runtime;

/// `--runtime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// smol: small, and the default.
    Smol,
    /// tokio (multi-threaded, 2 workers).
    Tokio,
}

/// Runs a command's future on one runtime.
pub trait Exec {
    /// The adapter's runtime handle.
    type R: Runtime;
    /// Builds the runtime, runs `f` to completion on it.
    fn run<F: Future>(f: impl FnOnce(Self::R) -> F) -> F::Output;
}

/// smol's global executor.
pub struct SmolExec;

impl Exec for SmolExec {
    type R = mau_smol::SmolRuntime;
    fn run<F: Future>(f: impl FnOnce(Self::R) -> F) -> F::Output {
        smol::block_on(f(mau_smol::SmolRuntime))
    }
}

/// A tokio multi-threaded runtime.
pub struct TokioExec;

impl Exec for TokioExec {
    type R = mau_tokio::TokioRuntime;
    fn run<F: Future>(f: impl FnOnce(Self::R) -> F) -> F::Output {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"));
        let handle = mau_tokio::TokioRuntime::from_handle(rt.handle().clone());
        rt.block_on(f(handle))
    }
}

/// Calls the generic command `$f::<Exec>(args)` on the chosen runtime.
macro_rules! on_runtime {
    ($choice:expr, $($f:ident)::+, $($arg:expr),* $(,)?) => {
        match $choice {
            $crate::runtime::RuntimeChoice::Smol => $($f)::+::<$crate::runtime::SmolExec>($($arg),*),
            $crate::runtime::RuntimeChoice::Tokio => $($f)::+::<$crate::runtime::TokioExec>($($arg),*),
        }
    };
}
pub(crate) use on_runtime;
