//! The listener: TLS (OpenSSL, client certificate requested, not required),
//! HTTP/1.1 (hyper), going down and up, and shutdown. It starts the filter
//! chain (`handler.rs`) per request and the CSR controllers
//! (`controller.rs`) once; nothing but `ApiServer` uses it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::handler::{handle, ConnInfo};
use super::Shared;

/// Commands from the test thread to the server's runtime.
pub(crate) enum Control {
    Down(std::sync::mpsc::Sender<()>),
    Up(std::sync::mpsc::Sender<()>),
    Shutdown,
}

pub(crate) fn acceptor(shared: &Shared) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    let (cert, key) = shared.ca.serving_cert();
    b.set_certificate(&cert).unwrap();
    b.set_private_key(&key).unwrap();
    b.add_extra_chain_cert(shared.ca.cert().clone()).unwrap();
    // tls.RequestClientCert: ask for a certificate, verify it per request in
    // the authenticator (so an expired one is a 401, not a handshake error).
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    let mut names = openssl::stack::Stack::new().unwrap();
    names
        .push(shared.ca.cert().subject_name().to_owned().unwrap())
        .unwrap();
    b.set_client_ca_list(names);
    b.set_session_id_context(b"nca-test-apiserver").unwrap();
    b.build()
}

/// Runs the accept loop until `Shutdown`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    acceptor: SslAcceptor,
    listener: TcpListener,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let addr: SocketAddr = listener.local_addr().unwrap();
    let acceptor = Arc::new(acceptor);
    let mut listener = Some(listener);
    // Bumped to end every open connection (going down, shutting down).
    let (kill_tx, kill_rx) = watch::channel(0u64);
    tokio::spawn(super::controller::run(shared.clone()));
    loop {
        tokio::select! {
            accepted = async {
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            } => {
                let Ok((tcp, _)) = accepted else { continue };
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                let mut kill = kill_rx.clone();
                // Only a kill after this connection was accepted ends it.
                kill.borrow_and_update();
                tokio::spawn(async move {
                    tokio::select! {
                        () = serve_conn(shared, acceptor, tcp) => {}
                        _ = kill.changed() => {}
                    }
                });
            }
            cmd = control.recv() => match cmd {
                Some(Control::Down(ack)) => {
                    listener = None;
                    kill_tx.send_modify(|g| *g += 1);
                    shared.state.lock().unwrap().up = false;
                    let _ = ack.send(());
                }
                Some(Control::Up(ack)) => {
                    if listener.is_none() {
                        listener = Some(TcpListener::bind(addr).await.unwrap_or_else(|e| {
                            panic!("test apiserver: cannot listen on {addr} again: {e}")
                        }));
                    }
                    shared.state.lock().unwrap().up = true;
                    let _ = ack.send(());
                }
                Some(Control::Shutdown) | None => {
                    kill_tx.send_modify(|g| *g += 1);
                    return;
                }
            }
        }
    }
}

async fn serve_conn(shared: Arc<Shared>, acceptor: Arc<SslAcceptor>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(ssl) = Ssl::new(acceptor.context()) else {
        return;
    };
    let Ok(mut stream) = hyper_openssl::SslStream::new(ssl, TokioIo::new(tcp)) else {
        return;
    };
    if Pin::new(&mut stream).accept().await.is_err() {
        return;
    }
    let peer: Option<(X509, Vec<X509>)> = stream.ssl().peer_certificate().map(|leaf| {
        let chain = stream
            .ssl()
            .peer_cert_chain()
            .map(|s| s.iter().map(|c| c.to_owned()).collect())
            .unwrap_or_default();
        (leaf, chain)
    });
    let conn = Arc::new(ConnInfo { peer });
    let svc = service_fn(move |req| handle(shared.clone(), conn.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(stream, svc)
        .await;
}
