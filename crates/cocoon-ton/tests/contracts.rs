//! Initial data cells read back with the contract state parsers, and the
//! derivation's dependence on every input.

mod common;

use cocoon_ton::contracts::*;
use cocoon_ton::root::{CocoonParams, CodeMask};
use common::*;

#[test]
fn initial_states_read_back() {
    let p = params("v3", "ours");
    let pk = key(1).verifying_key().to_bytes();
    let proxy = proxy_contract(&p, &addr(0x22), &addr(0x11), &pk).unwrap();
    let st = ProxyContractState::from_data(&proxy.data).unwrap();
    assert_eq!(st.owner, addr(0x11));
    assert_eq!(st.root, addr(0x22));
    assert_eq!(st.public_key, pk);
    assert_eq!(st.status, ContractStatus::Normal);
    assert_eq!((st.balance, st.stake, st.unlock_ts), (0, 0, 0));
    let stored = CocoonParams::from_cell(&st.params).unwrap();
    assert!(stored.proxy_sc_code.is_none() && stored.worker_sc_code.is_some());
    assert_eq!(st.params, p.to_cell(CodeMask::PROXY).unwrap());

    let client = client_contract(&p, &addr(0x33), &proxy.address, &pk).unwrap();
    let st = ClientContractState::from_data(&client.data).unwrap();
    assert_eq!(st.owner, addr(0x33));
    assert_eq!(st.proxy_sc, proxy.address);
    assert_eq!(st.proxy_public_key, pk);
    assert_eq!(st.stake, p.min_client_stake);
    assert_eq!((st.balance, st.tokens_used, st.unlock_ts), (0, 0, 0));
    assert_eq!(st.secret_hash, [0; 32]);
    assert_eq!(st.params, p.to_cell(CodeMask::NONE).unwrap());

    let worker = worker_contract(&p, &addr(0x44), &proxy.address, &pk).unwrap();
    let st = WorkerContractState::from_data(&worker.data).unwrap();
    assert_eq!(st.owner, addr(0x44));
    assert_eq!(st.proxy_sc, proxy.address);
    assert_eq!((st.status, st.tokens), (ContractStatus::Normal, 0));

    let wallet = cocoon_wallet_contract(&code("ours-wallet.boc"), &pk, &addr(0x55)).unwrap();
    let st = CocoonWalletState::from_data(&wallet.data).unwrap();
    assert_eq!((st.seqno, st.subwallet, st.status), (0, 0, 0));
    assert_eq!(st.owner, addr(0x55));

    // The StateInit hashes to the address.
    for c in [&proxy, &client, &worker, &wallet] {
        assert_eq!(c.state_init.repr_hash(), &c.address.address);
        assert_eq!(contract_address(&c.code, &c.data).unwrap(), c.address);
    }
    // The state structs write back the very same cells.
    let pst = ProxyContractState::from_data(&proxy.data).unwrap();
    assert_eq!(pst.to_data().unwrap(), proxy.data);
    let cst = ClientContractState::from_data(&client.data).unwrap();
    assert_eq!(cst.to_data().unwrap(), client.data);
    let wst = WorkerContractState::from_data(&worker.data).unwrap();
    assert_eq!(wst.to_data().unwrap(), worker.data);
    let wal = CocoonWalletState::from_data(&wallet.data).unwrap();
    assert_eq!(wal.to_data().unwrap(), wallet.data);
    // Wrong parsers refuse other layouts.
    assert!(WorkerContractState::from_data(&client.data).is_err());
    assert!(ClientContractState::from_data(&worker.data).is_err());
}

#[test]
fn every_input_changes_the_address() {
    let p = params("v3", "ours");
    let pk = key(1).verifying_key().to_bytes();
    let base = client_contract_address(&p, &addr(0x33), &addr(0x77), &pk).unwrap();
    assert_ne!(
        base,
        client_contract_address(&p, &addr(0x34), &addr(0x77), &pk).unwrap()
    );
    assert_ne!(
        base,
        client_contract_address(&p, &addr(0x33), &addr(0x78), &pk).unwrap()
    );
    let pk2 = key(2).verifying_key().to_bytes();
    assert_ne!(
        base,
        client_contract_address(&p, &addr(0x33), &addr(0x77), &pk2).unwrap()
    );
    let mut p2 = p.clone();
    p2.params_version += 1;
    assert_ne!(
        base,
        client_contract_address(&p2, &addr(0x33), &addr(0x77), &pk).unwrap()
    );
    // The proxy code is not part of client params; changing it keeps the address.
    let mut p3 = p.clone();
    p3.proxy_sc_code = Some(code("fake-ton-proxy.boc"));
    assert_eq!(
        base,
        client_contract_address(&p3, &addr(0x33), &addr(0x77), &pk).unwrap()
    );
    // But the proxy address depends on the worker code (params mask 6).
    let mut p4 = p.clone();
    p4.worker_sc_code = Some(code("fake-ton-worker.boc"));
    assert_ne!(
        proxy_contract_address(&p, &addr(0x22), &addr(0x11), &pk).unwrap(),
        proxy_contract_address(&p4, &addr(0x22), &addr(0x11), &pk).unwrap()
    );
    // Missing code is an error, not a wrong address.
    let mut p5 = p;
    p5.client_sc_code = None;
    assert!(client_contract_address(&p5, &addr(0x33), &addr(0x77), &pk).is_err());
}
