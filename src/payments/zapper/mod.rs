//! A small LNURL-pay server with NIP-57 zap support, on 127.0.0.1, for tests and `paydvm demo`:
//! it issues real regtest invoices and publishes 9735 receipts when told an invoice was paid.

pub mod invoice;
