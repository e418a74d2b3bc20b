//! End-to-end replication over real sockets on 127.0.0.1, run on each runtime: one suite
//! (`e2e/suite.rs`), compiled once per runtime with `rt` naming its types.

#![allow(clippy::unwrap_used)]

/// The suite on smol.
mod smol_runtime {
    use peerlite_smol as rt;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        smol::block_on(future)
    }

    include!("e2e/suite.rs");
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

    include!("e2e/suite.rs");
}
