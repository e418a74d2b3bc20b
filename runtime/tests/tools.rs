//! Identities made by `openssl`, seen by `openssl s_client` and `curl`; client
//! certificates; per-user limits; slow handshakes — on each runtime: one suite
//! (`tools/suite.rs`), compiled once per runtime. (`.ci/run` installs openssl and curl.)

#![allow(clippy::unwrap_used)]

/// The suite on smol.
mod smol_runtime {
    use peerlite_smol as rt;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        smol::block_on(future)
    }

    include!("tools/suite.rs");
}

/// The suite on tokio (a multi-threaded runtime, as most applications run).
mod tokio_runtime {
    use peerlite_tokio as rt;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    include!("tools/suite.rs");
}
