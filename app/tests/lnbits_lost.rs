//! Lightning refunds over a real LNbits whose pay call is lost on the way, as a network loses
//! it: a proxy between the node and LNbits drops either the answer to the pay request (the
//! payment went out; the node never hears) or the request itself (nothing went out). Either way
//! the node cannot tell which, so the refund stays pending and is looked up by its payment hash:
//! the first is found paid and settled; the second is found missing twice, some time apart, and
//! the same invoice is paid again. A gateway in front of LNbits (nginx, a load balancer) answering
//! 5xx in LNbits' place is the same two cases with an answer: after LNbits paid (a 504 when it was
//! slow) or instead of asking it (a 502 when it was down). The customer gets each refund once,
//! and the ledger's Lightning asset is what LNbits holds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paydvm::config::Config;
use paydvm::node::{Node, NodeOptions};
use paydvm_ledger::store::{verify_file, Store};
use paydvm_ledger::{JobState, RefundState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::lightning::quoted_invoice;
use crate::lnbits::{add_lnbits_admin, add_lnbits_at, Lnbits};
use crate::node::{float, is_status, start_relay, steps, wait_state, write_node_dir, Customer};
use crate::reconcile::{asset, reconcile_json};

/// The test node's price of a 5050 job, in sat.
const PRICE_SAT: u64 = 5;
/// The fee cap a Lightning refund reserves, which the operator's float covers.
const FLOAT_SAT: u64 = 10;

/// What the proxy loses of the next pay call made with the watched key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// LNbits gets the request and pays; its answer never reaches the node.
    Answer,
    /// The request never reaches LNbits.
    Request,
    /// LNbits gets the request and pays; the node gets a gateway's answer with this status.
    AnswerReplaced(u16),
    /// The request never reaches LNbits; a gateway answers it with this status.
    RequestAnswered(u16),
}

/// Ends the node's side of a proxied connection, after a gateway's answer with status
/// `answer` if one is given. Shut down explicitly: the half is shared between both directions,
/// so dropping one handle does not close it.
async fn close_with(to_client: &mut tokio::net::tcp::OwnedWriteHalf, answer: Option<u16>) {
    if let Some(status) = answer {
        let _ = to_client.write_all(&gateway_answer(status)).await;
    }
    let _ = to_client.shutdown().await;
}

/// What a gateway in front of LNbits sends instead of LNbits' answer.
fn gateway_answer(status: u16) -> Vec<u8> {
    let body = format!("<html><body><h1>{status} gateway error</h1></body></html>");
    format!(
        "HTTP/1.1 {status} Gateway Error\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A TCP proxy to LNbits that loses one pay call (`POST /api/v1/payments` with `key`, the
/// node's admin key: its invoices are made with the invoice key) each time it is armed.
struct PayCutter {
    url: String,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
}

impl PayCutter {
    async fn start(upstream: SocketAddr, key: String) -> PayCutter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (armed, cuts) = (Arc::new(Mutex::new(None)), Arc::new(AtomicUsize::new(0)));
        let (armed_here, cuts_here) = (Arc::clone(&armed), Arc::clone(&cuts));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = Cutting {
                    key: key.clone(),
                    armed: Arc::clone(&armed_here),
                    cuts: Arc::clone(&cuts_here),
                };
                tokio::spawn(cut.serve(client, upstream));
            }
        });
        PayCutter { url, armed, cuts }
    }

    fn arm(&self, cut: Cut) {
        *self.armed.lock().unwrap() = Some(cut);
    }

    fn cuts_made(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

/// One proxied connection.
struct Cutting {
    key: String,
    armed: Arc<Mutex<Option<Cut>>>,
    cuts: Arc<AtomicUsize>,
}

impl Cutting {
    /// The armed cut, taken, if `chunk` is (the head of) a pay call with the watched key.
    fn cut_for(&self, chunk: &[u8]) -> Option<Cut> {
        let text = String::from_utf8_lossy(chunk);
        if !(text.starts_with("POST /api/v1/payments ") && text.contains(&self.key)) {
            return None;
        }
        let cut = self.armed.lock().unwrap().take()?;
        self.cuts.fetch_add(1, Ordering::SeqCst);
        Some(cut)
    }

    async fn serve(self, client: TcpStream, upstream: SocketAddr) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut from_client, to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        let to_client = Arc::new(tokio::sync::Mutex::new(to_client));
        // Set once a pay call's answer must not reach the node: `Some(status)` sends a
        // gateway's answer with that status in its place.
        let answer_cut: Arc<Mutex<Option<Option<u16>>>> = Arc::new(Mutex::new(None));
        let (cutting, writer) = (Arc::clone(&answer_cut), Arc::clone(&to_client));
        let down = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                let cut = *cutting.lock().unwrap();
                let mut to_client = writer.lock().await;
                match cut {
                    // LNbits' answer goes nowhere: the connection closes under the node.
                    Some(instead) => return close_with(&mut to_client, instead).await,
                    None if to_client.write_all(&buf[..n]).await.is_err() => return,
                    None => {}
                }
            }
        });
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
            match self.cut_for(&buf[..n]) {
                Some(Cut::Request) => break,
                Some(Cut::RequestAnswered(status)) => {
                    close_with(&mut *to_client.lock().await, Some(status)).await;
                    break;
                }
                Some(Cut::Answer) => *answer_cut.lock().unwrap() = Some(None),
                Some(Cut::AnswerReplaced(status)) => {
                    *answer_cut.lock().unwrap() = Some(Some(status));
                }
                None => {}
            }
            if to_server.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        if answer_cut.lock().unwrap().is_none() {
            down.abort();
        }
        let _ = down.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_whose_pay_call_is_lost_or_answered_by_a_gateway_are_looked_up_and_paid_once() {
    let lnbits = Lnbits::start().await;
    let dvm = lnbits.wallet("dvm").await;
    let payer = lnbits.wallet("customer").await;
    lnbits.top_up(&payer, 100).await;
    lnbits.top_up(&dvm, FLOAT_SAT).await;
    let upstream = format!(
        "{}:{}",
        lnbits.url.host_str().unwrap(),
        lnbits.url.port().unwrap()
    );
    let cutter = PayCutter::start(upstream.parse().unwrap(), dvm.admin_key.clone()).await;

    let (_relay, relay_url) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), std::slice::from_ref(&relay_url), "refund");
    add_lnbits_at(&config, &cutter.url, &dvm);
    add_lnbits_admin(&config, &dvm);
    let ledger = dir.path().join("paydvm.db");
    float(&ledger, FLOAT_SAT * 1_000);
    let options = NodeOptions {
        // Two "no record" answers this far apart make a payment "never sent".
        never_sent_after: Duration::from_secs(2),
        ..NodeOptions::default()
    };
    let node = Node::start_with(Config::load(&config).unwrap(), options)
        .await
        .unwrap();
    let mut customer = Customer::connect(std::slice::from_ref(&relay_url)).await;

    let mut jobs = Vec::new();
    let cuts = [
        (Cut::Answer, "answer lost"),
        (Cut::Request, "request lost"),
        (Cut::AnswerReplaced(504), "paid, then a gateway's 504"),
        (Cut::RequestAnswered(502), "not asked, a gateway's 502"),
    ];
    for (cut, text) in cuts {
        cutter.arm(cut);
        let refund_to = lnbits.invoice(&payer, PRICE_SAT).await;
        let tags: [&[&str]; 2] = [&["param", "mode", "fail"], &["refund", &refund_to]];
        let request = customer.request(5050, text, &tags);
        customer.client.send_event(&request).await.unwrap();
        let job = request.id.to_hex();
        let quote = customer
            .wait_for(request.id, is_status("payment-required"))
            .await;
        let paid = lnbits
            .pay(&payer, quoted_invoice(&quote, &job).as_str())
            .await;
        assert_eq!(paid["status"], "success", "{paid}");
        wait_state(&node, &job, JobState::Refunded).await;
        jobs.push(job);
    }
    node.shutdown().await;
    assert_eq!(cutter.cuts_made(), cuts.len(), "each pay call was cut once");

    let store = Store::open_read_only(&ledger).unwrap();
    for job in &jobs {
        let refunds: Vec<_> = store
            .state()
            .refunds()
            .filter(|r| r.job.as_ref().map(|j| j.as_str()) == Some(job.as_str()))
            .collect();
        assert_eq!(refunds.len(), 1, "{refunds:?}");
        // Started once, its outcome unknown (not taken as paid or failed), then settled.
        let trail = steps(&store, job);
        let refund_steps: Vec<_> = trail.iter().filter(|s| s.starts_with("refund_")).collect();
        assert_eq!(refund_steps.first(), Some(&&"refund_due"), "{trail:?}");
        assert_eq!(refund_steps[1], &"refund_started", "{trail:?}");
        assert_eq!(refund_steps[2], &"refund_outcome_unknown", "{trail:?}");
        assert_eq!(refund_steps.last(), Some(&&"refund_settled"), "{trail:?}");
        assert_eq!(
            trail.iter().filter(|s| **s == "refund_started").count(),
            1,
            "{trail:?}"
        );
        assert_eq!(
            (refunds[0].state, refunds[0].attempts),
            (RefundState::Settled, 1),
            "the same attempt and invoice, looked up or paid again: {:?}",
            refunds[0]
        );
    }
    verify_file(&ledger).unwrap();
    // Each price came in once and went back once: nothing paid twice, nothing booked unsent.
    assert_eq!(lnbits.balance(&payer).await, 100_000);
    assert_eq!(lnbits.balance(&dvm).await, FLOAT_SAT * 1_000);
    let (code, report) = reconcile_json(&config).await;
    assert_eq!(code, 0, "{report:#}");
    let lightning = asset(&report, "asset:lightning");
    assert_eq!(lightning["status"], "match", "{lightning:#}");
}
