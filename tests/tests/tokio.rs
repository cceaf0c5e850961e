//! The conformance suite on the tokio adapter.

struct Tokio;

impl mau_tests::Harness for Tokio {
    type R = mau_tokio::TokioRuntime;
    fn rt() -> Self::R {
        mau_tokio::TokioRuntime::from_handle(runtime().handle().clone())
    }
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        runtime().block_on(f)
    }
}

/// One multi-threaded runtime per test binary (tests run in parallel threads).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

mau_tests::conformance_suite!(Tokio);
