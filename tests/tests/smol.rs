//! The conformance suite on the smol adapter.

struct Smol;

impl mau_tests::Harness for Smol {
    type R = mau_smol::SmolRuntime;
    fn rt() -> Self::R {
        mau_smol::SmolRuntime
    }
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        smol::block_on(f)
    }
}

mau_tests::conformance_suite!(Smol);
