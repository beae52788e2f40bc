// An independent subscriber written with NDK (npm @nostr-dev-kit/ndk, installed by
// tools/peer-npm.sh ndk), driven by app/tests/ndk.rs. Against one relay on 127.0.0.1 it:
// reads the node's tier (kind 37001) with NDKSubscriptionTier, publishes its own 7001 built by
// NDKSubscriptionStart, waits for the node's payment-required quote (the Rust test pays it),
// parses the node's 7003 with NDKSubscriptionReceipt, then sends a 5050 job (NDKDVMRequest) and
// waits for its result. Each step prints one JSON line on stdout ({"step": ...}); every wait has
// a time-out after which the script exits 1 naming what it waited for.
//
// Environment: NDK_PREFIX (the npm prefix holding node_modules), RELAY (ws://127.0.0.1:...),
// NODE_PUBKEY (hex), TIER_D (the tier's d tag), SUBSCRIBER_SECRET (hex secret key).
import { createRequire } from "node:module";
import { join } from "node:path";

const env = (name) => process.env[name] ?? fail(`${name} is not set`);
const require = createRequire(join(env("NDK_PREFIX"), "package.json"));
// Node before 22 has no global WebSocket; NDK uses the global one.
globalThis.WebSocket ??= require("ws");
const ndkModule = require("@nostr-dev-kit/ndk");
const {
  NDKDVMRequest,
  NDKPrivateKeySigner,
  NDKSubscriptionReceipt,
  NDKSubscriptionStart,
  NDKSubscriptionTier,
} = ndkModule;
const NDK = ndkModule.default;

const WAIT_MS = 30_000;
const relay = env("RELAY");
const nodePubkey = env("NODE_PUBKEY");
if (!/^ws:\/\/127\.0\.0\.1:\d+\/?$/.test(relay)) fail(`not a loopback relay: ${relay}`);

function fail(message) {
  console.error(`ndk_subscriber: ${message}`);
  process.exit(1);
}

function emit(step, fields) {
  console.log(JSON.stringify({ step, ...fields }));
}

const secs = (date) => Math.floor(date.getTime() / 1000);

/// `promise`, or exit 1 naming `what` if it takes longer than WAIT_MS.
function within(what, promise) {
  let timer;
  const late = new Promise(() => {
    timer = setTimeout(() => fail(`timed out after ${WAIT_MS} ms: ${what}`), WAIT_MS);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/// Resolves with the first event of `sub` (seen before or after the call) matching `pred`.
function waitFor(seen, sub, pred, what) {
  const found = seen.find(pred);
  if (found) return Promise.resolve(found);
  return new Promise((resolve) => {
    const timer = setTimeout(() => fail(`timed out after ${WAIT_MS} ms waiting for ${what}`), WAIT_MS);
    sub.on("event", (event) => {
      if (pred(event)) {
        clearTimeout(timer);
        resolve(event);
      }
    });
  });
}

/// Subscribes to the replies that e-tag `id` and keeps every one seen.
function replies(ndk, kinds, id) {
  const seen = [];
  const sub = ndk.subscribe({ kinds, "#e": [id] }, { closeOnEose: false, groupable: false });
  sub.on("event", (event) => seen.push(event));
  return { seen, sub };
}

const status = (event) => event.tagValue("status");

const ndk = new NDK({
  explicitRelayUrls: [relay],
  // Only the test's relay: no outbox look-ups on public relays, no relays from user lists.
  enableOutboxModel: false,
  autoConnectUserRelays: false,
  signer: new NDKPrivateKeySigner(env("SUBSCRIBER_SECRET")),
});
await within("connecting to the relay", ndk.connect(WAIT_MS));
const me = await ndk.signer.user();

// 1. The tier, found and parsed by NDK.
const tierFilter = { kinds: [37001], authors: [nodePubkey], "#d": [env("TIER_D")] };
const deadline = Date.now() + WAIT_MS;
let tierEvent = null;
while (!tierEvent) {
  if (Date.now() > deadline) fail("timed out waiting for the node's 37001 tier");
  tierEvent = await within("fetching the tier", ndk.fetchEvent(tierFilter, { groupable: false }));
  if (!tierEvent) await new Promise((r) => setTimeout(r, 200));
}
const tier = NDKSubscriptionTier.from(tierEvent);
emit("tier", {
  id: tier.id,
  d: tier.dTag,
  title: tier.title,
  amounts: tier.amounts,
  verifier: tier.verifierPubkey,
  isValid: tier.isValid,
});
if (!tier.isValid) fail(`NDK does not consider the tier valid: ${JSON.stringify(tier.rawEvent())}`);

// 2. Our 7001, as NDK writes it for this tier.
const start = new NDKSubscriptionStart(ndk);
start.tier = tier;
start.amount = tier.amounts[0];
start.content = "subscribing with NDK";
await start.sign();
const quotes = replies(ndk, [7000, 7003], start.id);
await within("publishing the 7001", start.publish());
emit("subscribe", { id: start.id, tags: start.tags, isValid: start.isValid });

// 3. The quote: the Rust test pays the invoice.
const quote = await waitFor(
  quotes.seen,
  quotes.sub,
  (e) => e.kind === 7000 && status(e) === "payment-required",
  "a payment-required quote e-tagging our 7001",
);
const [, msat, bolt11] = quote.getMatchingTags("amount")[0] ?? [];
emit("quote", { author: quote.pubkey, msat, bolt11 });

// 4. The node's receipt, read by NDK.
const receiptEvent = await waitFor(
  quotes.seen,
  quotes.sub,
  (e) => e.kind === 7003 && e.pubkey === nodePubkey,
  "the node's 7003 receipt",
);
const receipt = NDKSubscriptionReceipt.from(receiptEvent);
const period = receipt.validPeriod;
emit("receipt", {
  id: receipt.id,
  author: receipt.pubkey,
  signatureValid: receiptEvent.verifySignature(false),
  signedByVerifier: receipt.pubkey === tier.verifierPubkey,
  recipient: receipt.recipient?.pubkey,
  subscriber: receipt.subscriber?.pubkey,
  subscription: receipt.tagValue("e"),
  tierName: receipt.tierName,
  valid: period && { start: secs(period.start), end: secs(period.end) },
  isValid: receipt.isValid,
  isActive: receipt.isActive(),
});

// 5. A job the subscription covers: a result, never a quote.
const job = new NDKDVMRequest(ndk, { kind: 5050, tags: [], content: "" });
job.addInput("hello from ndk", "text");
job.addParam("mode", "upper");
job.dvm = ndk.getUser({ pubkey: nodePubkey });
await job.sign();
const answers = replies(ndk, [6050, 7000], job.id);
await within("publishing the job", job.publish());
const result = await waitFor(answers.seen, answers.sub, (e) => e.kind === 6050, "the job's result");
emit("job", {
  id: job.id,
  subscriber: me.pubkey,
  result: result.content,
  feedback: answers.seen.filter((e) => e.kind === 7000).map(status),
});
process.exit(0);
