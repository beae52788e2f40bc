"""A Nutshell wallet customer: mints at a Nutshell mint (its FakeWallet settles the quote) and
prints, as JSON on stdout, proofs worth AMOUNT sat P2PK-locked to PUBKEY (NUT-11, with DLEQ).

usage: nutshell_p2pk_send.py MINT_URL PUBKEY_HEX AMOUNT WALLET_DIR
"""
import asyncio
import json
import sys

from cashu.wallet.wallet import Wallet


async def main(url: str, pubkey: str, amount: int, db: str) -> None:
    wallet = await Wallet.with_db(url, db=db, name="customer")
    await wallet.load_mint()
    # Enough to pay the mint's input fee on the swap that locks the proofs.
    funded = amount + 4
    quote = await wallet.request_mint(funded)
    await wallet.mint(funded, quote_id=quote.quote)
    lock = await wallet.create_p2pk_lock(pubkey)
    _, send = await wallet.swap_to_send(
        wallet.proofs, amount, secret_lock=lock, set_reserved=True
    )
    print(json.dumps([p.to_dict(include_dleq=True) for p in send]))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
