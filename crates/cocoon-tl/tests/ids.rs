//! Every constructor id equals the id in the protocol spec (cocoon-protocol.md §2.3, §2.4).

use cocoon_tl::{codec, TlConstructor, CONSTRUCTORS};

/// The constructor table of COCOON 9060ce5: cocoon-protocol.md §2.4 with every change of
/// cocoon-protocol-9060ce5.md §2.4 (ids there checked against upstream's compiled `.tlo`).
const SPEC_IDS: &[(&str, u32)] = &[
    ("client.authorizationWithProxyFailed", 0x60551c96),
    ("client.authorizationWithProxySuccess", 0x75d5ac34),
    ("client.authorizeWithProxyLong", 0xd3474303),
    ("client.authorizeWithProxyShort", 0x6c276723),
    ("client.connectToProxy", 0xff5fa0f4),
    ("client.connectedToProxy", 0x95317ad1),
    ("client.getWorkerTypes", 0x7f062bdb),
    ("client.getWorkerTypesV2", 0xb2133d72),
    ("client.params", 0x40fdca64),
    ("client.paymentStatus", 0xaa8a0ecc),
    ("client.proxyConnectionAuthLong", 0x417bf016),
    ("client.proxyConnectionAuthShort", 0xd6ffc5af),
    ("client.queryAnswer", 0x9b943922),
    ("client.queryAnswerError", 0x6d60569a),
    ("client.queryAnswerErrorEx", 0x072562a8),
    ("client.queryAnswerEx", 0xcd524720),
    ("client.queryAnswerPart", 0xb765de4c),
    ("client.queryAnswerPartError", 0xd790a022),
    ("client.queryAnswerPartEx", 0xc07bfaec),
    ("client.queryFinalInfo", 0x69a452f0),
    ("client.refund", 0x83aabead),
    ("client.refundRejected", 0xcf9d9957),
    ("client.requestRefund", 0x238d863d),
    ("client.runQuery", 0xbc748f32),
    ("client.runQueryEx", 0xf54cb74b),
    ("client.updatePaymentStatus", 0x9ed1c697),
    ("client.workerInstanceV2", 0x3ea93d00),
    ("client.workerType", 0x8210e21c),
    ("client.workerTypeV2", 0xb27d8197),
    ("client.workerTypes", 0xf64e0e01),
    ("client.workerTypesV2", 0x0cf0dc67),
    ("clientRunner.config", 0xaf0bd51f),
    ("http.header", 0x8e9be511),
    ("http.request", 0x47492de5),
    ("http.response", 0x1cd0c42b),
    ("keyManager.getProxyPrivateKeys", 0x4135d0bd),
    ("keyManager.getWorkerPrivateKeys", 0x4b90e9b1),
    ("keyManager.privateKey", 0x60f4f8e7),
    ("keyManager.privateKeys", 0x0ed66ce5),
    ("keyManagerDb.configEmpty", 0xd3fc2385),
    ("keyManagerDb.configV1", 0x6d2817ac),
    ("keyManagerDb.key", 0x35c91007),
    ("keyStorageRunner.config", 0xec650826),
    ("proxy.clientRequestPayment", 0xc6bcf127),
    ("proxy.params", 0xd5c5609f),
    ("proxy.queryAnswer", 0x37e5f725),
    ("proxy.queryAnswerError", 0x669d014e),
    ("proxy.queryAnswerErrorEx", 0x8f7fb0a7),
    ("proxy.queryAnswerEx", 0x1ce574e8),
    ("proxy.queryAnswerPart", 0x72eb00ee),
    ("proxy.queryAnswerPartError", 0x940e1168),
    ("proxy.queryAnswerPartEx", 0x6d85b50f),
    ("proxy.queryFinalInfo", 0xe794e6fc),
    ("proxy.runQuery", 0x47182416),
    ("proxy.runQueryEx", 0xc805e7e2),
    ("proxy.signedPayment", 0x02998182),
    ("proxy.signedPaymentEmpty", 0xb347ce64),
    ("proxy.workerRequestPayment", 0x1436c0d5),
    ("proxyDb.clientInfo", 0x6cfeaa21),
    ("proxyDb.clientInfoV2", 0x3078c9bf),
    ("proxyDb.configEmpty", 0x43dc40b4),
    ("proxyDb.configV4", 0xbde43703),
    ("proxyDb.configV4Disabled", 0xad2cfb4a),
    ("proxyDb.oldClient", 0x2fae7b42),
    ("proxyDb.oldInstance", 0xa8c9e178),
    ("proxyDb.oldWorker", 0xf04156a0),
    ("proxyDb.pendingBlockchainSeqnoCommit", 0x525b14a9),
    ("proxyDb.workerInfo", 0x2517b38f),
    ("proxyRunner.config", 0x9a8f2045),
    ("rootConfig.configV7", 0xc51207cb),
    ("rootConfig.pseudo", 0xd0035db6),
    ("rootConfig.registeredProxy", 0x9f4e446a),
    ("rootConfig.registeredPublicKey", 0x37312ecd),
    ("tcp.connect", 0xa57c4261),
    ("tcp.connected", 0x636d41d6),
    ("tcp.packet", 0x9c17baf8),
    ("tcp.ping", 0xbbe9627c),
    ("tcp.pong", 0x0bd4302c),
    ("tcp.query", 0x3af51908),
    ("tcp.queryAnswer", 0xc048c311),
    ("tcp.queryError", 0x4cd2f602),
    ("test.answer", 0x0d4fcdb6),
    ("test.query", 0x394e9143),
    ("tokensUsed", 0x70c5b15c),
    ("ton.blockIdExt", 0xbc3f6da5),
    ("worker.compareBalanceWithProxy", 0xdb386501),
    ("worker.compareBalanceWithProxyResult", 0x9054c411),
    ("worker.connectToProxy", 0xcc484c5d),
    ("worker.connectedToProxy", 0x66bc82ee),
    ("worker.enabledDisabled", 0xb3b71039),
    ("worker.extendedCompareBalanceWithProxy", 0xf8dd9914),
    ("worker.extendedCompareBalanceWithProxyResult", 0x0c10973e),
    ("worker.newCoefficient", 0x6af092b0),
    ("worker.params", 0x869c73ed),
    ("worker.changeModel", 0x72662cee),
    ("worker.changedModel", 0x34029366),
    ("worker.paymentStatus", 0xa88bd701),
    ("worker.proxyHandshakeComplete", 0xf843b066),
    ("worker.proxyHandshakeCompleted", 0x3ad9b886),
    ("worker.updatePaymentStatus", 0xdc70a524),
    ("workerRunner.config", 0x41af605f),
];

/// Our own extension constructors (protocol version 3), not part of COCOON's table.
const EXTENSIONS: &[&str] = &[
    "cocoonrs.cancelQuery",
    "cocoonrs.workerEndpoints",
    "cocoonrs.modelEndpoints",
    "cocoonrs.endpointsOfModels",
    "cocoonrs.getEndpointsOfModels",
    "cocoonrs.evidence",
    "cocoonrs.attestation",
    "cocoonrs.getAttestation",
];

#[test]
fn every_generated_id_matches_the_spec_table() {
    let cocoon: Vec<_> = CONSTRUCTORS
        .iter()
        .filter(|(_, name)| !name.starts_with("cocoonrs."))
        .collect();
    assert_eq!(
        cocoon.len(),
        SPEC_IDS.len(),
        "the schema and the spec table list different numbers of constructors"
    );
    assert_eq!(CONSTRUCTORS.len(), cocoon.len() + EXTENSIONS.len());
    for (name, spec_id) in SPEC_IDS {
        let generated = CONSTRUCTORS
            .iter()
            .find(|(_, n)| n == name)
            .unwrap_or_else(|| panic!("{name} is in the spec but not in our schema"));
        assert_eq!(
            generated.0, *spec_id,
            "{name}: generated {:#010x}, spec {spec_id:#010x}",
            generated.0
        );
    }
}

#[test]
fn extension_ids_follow_the_crc32_rule() {
    let id = crc32fast::hash(b"cocoonrs.cancelQuery request_id:int256 = cocoonrs.CancelQuery");
    assert_eq!(cocoon_tl::types::cocoonrs::CancelQuery::ID, id);
    assert_eq!(
        cocoon_tl::constructor_name(id),
        Some("cocoonrs.cancelQuery")
    );
    // `(vector string)` is written `vector string` in the text the id is taken of.
    let id = crc32fast::hash(
        b"cocoonrs.workerEndpoints endpoints:vector string = cocoonrs.WorkerEndpoints",
    );
    assert_eq!(cocoon_tl::types::cocoonrs::WorkerEndpoints::ID, id);
    assert_eq!(
        cocoon_tl::constructor_name(id),
        Some("cocoonrs.workerEndpoints")
    );
    assert!(EXTENSIONS.iter().all(|name| name.starts_with("cocoonrs.")));
}

#[test]
fn ids_are_unique() {
    let mut ids: Vec<u32> = CONSTRUCTORS.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), CONSTRUCTORS.len());
}

#[test]
fn the_four_pinned_ids_are_not_crc_of_their_text() {
    use cocoon_tl::types::{client, proxy, worker};
    assert_eq!(worker::Params::ID, 0x869c73ed);
    assert_eq!(proxy::Params::ID, 0xd5c5609f);
    assert_eq!(client::Params::ID, 0x40fdca64);
    assert_eq!(client::WorkerInstanceV2::ID, 0x3ea93d00);
    // The CRC of the current text differs, which is why the ids are pinned (spec §2.3).
    let crc = crc32fast::hash(
        b"worker.params flags:# worker_owner_address:string model:string coefficient:int \
is_test:flags.0?Bool proxy_cnt:flags.0?int max_active_requests:flags.0?int \
min_proto_version:flags.1?int max_proto_version:flags.1?int = worker.Params",
    );
    assert_eq!(crc, 0x1e0a3348);
    assert_ne!(crc, worker::Params::ID);
}

#[test]
fn ids_follow_the_crc32_rule() {
    assert_eq!(
        crc32fast::hash(b"tcp.ping id:long = tcp.Packet"),
        0xbbe9627c
    );
    assert_eq!(cocoon_tl::types::tcp::Ping::ID, 0xbbe9627c);
}

#[test]
fn builtin_ids_match_the_spec() {
    assert_eq!(codec::BOOL_TRUE, 0x997275b5);
    assert_eq!(codec::BOOL_FALSE, 0xbc799737);
    assert_eq!(crc32fast::hash(b"boolTrue = Bool"), 0x997275b5);
    assert_eq!(crc32fast::hash(b"boolFalse = Bool"), 0xbc799737);
    // Braces are dropped by the normalization, like parentheses.
    assert_eq!(
        crc32fast::hash(b"vector t:Type # [ t ] = Vector t"),
        0x1cb5c415
    );
    assert_eq!(crc32fast::hash(b"int256 8*[ int ] = Int256"), 0x7bedeb5b);
}

#[test]
fn the_9060ce5_query_ids_stay_pinned_while_their_text_grew() {
    use cocoon_tl::functions::{client, proxy};
    assert_eq!(client::RunQueryEx::ID, 0xf54cb74b);
    assert_eq!(proxy::RunQueryEx::ID, 0xc805e7e2);
    // The texts with the 9060ce5 key fields hash to these (reference §2.3): so the fields,
    // their order and their flag bits are exactly upstream's.
    let client_text = b"client.runQueryEx model_name:string query:bytes max_coefficient:int \
max_tokens:int timeout:double request_id:int256 min_config_version:int flags:# \
enable_debug:flags.0?Bool public_key:flags.1?int256 = client.QueryAnswerEx";
    assert_eq!(crc32fast::hash(client_text), 0x2a223a90);
    let proxy_text = b"proxy.runQueryEx query:bytes signed_payment:proxy.SignedPayment \
coefficient:long timeout:double request_id:int256 flags:# enable_debug:flags.0?Bool \
private_key:flags.1?int256 = proxy.QueryAnswer";
    assert_eq!(crc32fast::hash(proxy_text), 0x57eefa78);
    let worker_text = b"worker.params flags:# worker_owner_address:string model:string \
coefficient:int is_test:flags.0?Bool proxy_cnt:flags.0?int max_active_requests:flags.0?int \
min_proto_version:flags.1?int max_proto_version:flags.1?int \
machine_description_json:flags.2?string = worker.Params";
    assert_eq!(crc32fast::hash(worker_text), 0xebddc42d);
}
