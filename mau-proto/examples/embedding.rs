//! Embedding the core: two nodes in one thread, a queue standing in for the
//! network. docs/embedding.md walks through it; `cargo run -p mau-proto
//! --example embedding` runs it.

use std::collections::VecDeque;
use std::time::Duration;

use mau_proto::{
    Caller, Config, Contact, Event, Fingerprint, Node, Output, Request, RequestId, Response, Time,
};

/// A message on our pretend wire; addresses are node indices (a `u32`
/// stands for an IPv4 address, so the core's per-IP limits apply).
enum Message {
    /// `from` asks `to`.
    Request {
        from: u32,
        to: u32,
        id: RequestId,
        request: Request,
    },
    /// The answer to `to`'s request `id`.
    Answer {
        to: u32,
        id: RequestId,
        response: Response<u32>,
    },
}

/// An address a `u32` can be: no IP, so no per-IP limit applies.
fn id(n: u8) -> Fingerprint {
    Fingerprint::V4([n; 20])
}

fn main() {
    let config = Config::default();
    // 1. One node per identity; the seed makes its random choices repeatable.
    let mut nodes = vec![
        Node::new(id(1), config.clone(), 1),
        Node::new(id(2), config.clone(), 2),
    ];
    let mut now = Time::ZERO;
    let mut wire: VecDeque<Message> = VecDeque::new();

    // 2. User commands: node 1 joins through node 0.
    nodes[1]
        .join(now, [Contact::new(id(1), 0)])
        .expect("a fresh node runs no lookup");

    let mut joined = false;
    while !joined {
        // 3. Drain every node's outputs: requests go on the wire, events are ours.
        for (me, node) in nodes.iter_mut().enumerate() {
            let me = me as u32;
            while let Some(output) = node.poll_output() {
                match output {
                    Output::Transmit(t) => wire.push_back(Message::Request {
                        from: me,
                        to: t.to.address,
                        id: t.id,
                        request: t.request,
                    }),
                    Output::Event(Event::Joined { peers }) => {
                        println!("node {me} joined, {peers} peer(s) in its table");
                        joined = true;
                    }
                    Output::Event(e) => println!("node {me}: {e:?}"),
                }
            }
        }
        // 4. Deliver what is on the wire. An inbound request is answered at
        //    once; its caller proved its fingerprint (mutual TLS in mau-net)
        //    and only claims its address, so the node may probe it.
        if let Some(message) = wire.pop_front() {
            match message {
                Message::Request {
                    from,
                    to,
                    id: rid,
                    request,
                } => {
                    let caller = Caller {
                        fingerprint: nodes[from as usize].local(),
                        address: Some(from),
                        source: None,
                    };
                    let response = nodes[to as usize].on_request(now, caller, &request);
                    wire.push_back(Message::Answer {
                        to: from,
                        id: rid,
                        response,
                    });
                }
                Message::Answer {
                    to,
                    id: rid,
                    response,
                } => nodes[to as usize].on_response(now, rid, Ok(response)),
            }
            continue;
        }
        // 5. Nothing in flight: let time pass to the earliest deadline.
        let next = nodes.iter_mut().filter_map(|n| n.poll_timeout()).min();
        let Some(next) = next else { break };
        now = next.max(now + Duration::from_millis(1));
        for node in &mut nodes {
            node.handle_timeout(now);
        }
    }
    assert!(
        nodes[0].table().contains(&id(2)),
        "node 0 probed node 1 and added it"
    );
    assert!(nodes[1].table().contains(&id(1)));
}
