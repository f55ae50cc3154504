// The store service: a distributed key-value store on top of the locator ring.
//
// `get` and `put` are the 2009 interface and stay as they were (UTF-8 strings, put
// is oneway). The thrifty-p2p methods are acknowledged and use `binary`.

include "locator.thrift"

namespace py diststore
namespace rs diststore

/**
 * What kind of failure a `StoreError` reports, so a client can act on it
 * without parsing the message. Whether a write took effect depends on the kind:
 * REFUSED, TOO_LARGE, TOO_MANY_HOPS, EXPIRED, NO_OWNER, JOINING, PAUSED and
 * SHUTTING_DOWN stored nothing; QUORUM means too few replicas stored the write
 * (it stays on those that did and may still spread, so retry); UNREACHABLE and
 * RPC mean a call between nodes failed (for RPC a write may have been applied).
 * Every write is versioned, so retrying any of them is safe. New kinds may be
 * added: treat an unknown one as OTHER.
 */
enum ErrorKind {
  OTHER = 0,
  REFUSED = 1,
  TOO_LARGE = 2,
  TOO_MANY_HOPS = 3,
  QUORUM = 4,
  READ_QUORUM = 5,
  EXPIRED = 6,
  NO_OWNER = 7,
  JOINING = 8,
  PAUSED = 9,
  SHUTTING_DOWN = 10,
  STORAGE = 11,
  UNREACHABLE = 12,
  RPC = 13,
  /**
   * The node requires a secret this connection has not proved (see `hello`
   * and `authenticate`). Nothing changed.
   */
  UNAUTHORIZED = 14,
  /**
   * `fetch` (or the 2009 `get`) of a key that holds a streamed value: one
   * stored in parts behind a manifest, which those methods do not return.
   * Read it with `describe` and `read_range`. Nothing changed.
   */
  STREAMED = 15,
  /**
   * `read_range` was given the `id` of the value being read, and the key now
   * holds another value (or none): the value was replaced while you read it;
   * start again from `describe`. Nothing changed.
   */
  CHANGED = 16,
  /**
   * `upload_part` or `commit_upload` named an upload this node does not hold
   * open: never begun here (uploads live on the node that began them), already
   * committed, or expired (older than half the node's `--chunk-grace`).
   * Begin a new upload. The key is unchanged.
   */
  NO_SUCH_UPLOAD = 17,
  /**
   * A create-only write (`store_with` with `create_only`) found a value at
   * the key (a tombstone does not count): nothing changed. Read the value,
   * or write without `create_only` to replace it.
   */
  EXISTS = 18,
  /**
   * `lock` of a key whose lease another holder has and that has not
   * expired: nothing changed. The message says until when (wall-clock
   * milliseconds since the epoch); retry after that, or wait for `unlock`.
   */
  HELD = 19,
  /**
   * The token given (`unlock`, `renew`, or a write's `fence`) is not the
   * key's current lease: a newer lease was granted since, the lease was
   * unlocked, or no lease with that token was ever granted. Nothing
   * changed. A holder that sees it has lost the lease: stop writing, and
   * `lock` again if it still needs the key.
   */
  STALE_TOKEN = 20,
  /**
   * The write would take a node over its `--max-memory`: the key and value
   * bytes it holds plus the write's growth would exceed its cap. The message
   * names the node, its usage and its cap. Nothing is evicted to make room:
   * erase keys (erases are always taken), raise `--max-memory`, or add nodes.
   * When the coordinator itself is full nothing was stored; when it passes on
   * a replica's refusal, the write stays on the replicas that took it and may
   * still spread, as with QUORUM. Retrying is safe but fails until there is
   * room.
   */
  FULL = 21,
}

/**
 * Why a store operation failed: a message for people and, from this version
 * on, its `kind` for programs (absent from older nodes).
 */
exception StoreError {
  1: string message,
  2: optional ErrorKind kind,
}

/**
 * The answer to a read: `value` is unset when the key is not stored. Replies to
 * `relay_fetch` also carry the copy's version (`version` and `origin`), so the
 * forwarding node can tell an erased key (version set, no value) from one the
 * replica has never seen (no version): an erase must win over older copies.
 */
struct Lookup {
  1: optional binary value,
  2: optional i64 version,
  3: optional i32 origin,
}

/**
 * A stored value with its version, as moved between nodes. Versions are hybrid
 * logical clock readings; `origin` breaks ties, so every node settles on the same
 * value for a key.
 */
struct Entry {
  1: binary key,
  /** Unset for a tombstone (the key was erased). */
  2: optional binary value,
  3: i64 version,
  4: i32 origin,
}

/**
 * A replica's own copy of a key, as a coordinator's quorum read asks for it.
 * `value` unset with `version` set is a tombstone; neither set: never seen.
 */
struct Replica {
  1: optional binary value,
  2: optional i64 version,
  3: optional i32 origin,
  /**
   * The replica vouches for its copy: it holds the key in its ring, its ring
   * is the caller's, and it has caught up since its ring last changed.
   */
  4: bool trusted,
  /** The replica's ring id (see `heartbeat`). */
  5: i64 ring,
}

/**
 * One key in a page of `list_keys`: a copy this node holds, with its version,
 * and whether it is a tombstone (the key was erased), so a client merging the
 * pages of several replicas keeps the newest copy of each key and leaves out
 * erased keys.
 */
struct ListedKey {
  1: binary key,
  2: i64 version,
  3: i32 origin,
  4: bool erased,
}

/** A page of `list_keys`. */
struct KeyPage {
  /** In the listing order (see `list_keys`). */
  1: list<ListedKey> keys,
  /**
   * Where the next page starts; unset once this node has nothing after the
   * page. Every key this node holds between the page's start and `resume` is
   * in `keys`.
   */
  2: optional binary resume,
}

/**
 * What `describe` tells of the value at a key (README, Large values). A value
 * is read in parts of `part_bytes`, or in any ranges, with `read_range`.
 */
struct ValueInfo {
  /** Whether the key holds a value; false: never written, or erased. */
  1: bool exists,
  /** The value's size in bytes (0 when it does not exist). */
  2: i64 size,
  /**
   * Whether it is stored streamed: as parts behind a manifest (uploaded with
   * `begin_upload`, or by a client that streams large values), which `fetch`
   * does not return; false for a plain value, which `fetch` returns whole.
   */
  3: bool streamed,
  /** Bytes per part; every part but the last is this long (a plain value: its size). */
  4: i64 part_bytes,
  /** How many parts (a plain value: 1, or 0 when empty). */
  5: i64 parts,
  /**
   * The value's identity: its upload id when streamed, its version when
   * plain; never 0. Pass it to `read_range` as `id` so that a read spanning
   * several calls is told CHANGED rather than stitch two values together.
   */
  6: i64 id,
  /**
   * A streamed value's manifest, raw (layout in src/stream.rs): a client
   * that knows it may fetch the parts straight from their owners, several at
   * a time. Other clients ignore it.
   */
  7: optional binary manifest,
  /** The content type stored with the value (`store_with`), if any. */
  8: optional string content_type,
  /** The short description stored with the value (`store_with`), if any. */
  9: optional string description,
  /**
   * The bytes the value occupies in each replica's store, when the node
   * stored it compressed (README, Limits); unset for a value stored as is.
   */
  10: optional i64 stored_bytes,
}

/**
 * How `store_with` and `append` write. Every field is optional; none set
 * writes as `store` does.
 */
struct WriteOptions {
  /**
   * Write only if the key holds no value (never written, or erased);
   * otherwise fail with EXISTS and change nothing. Of concurrent create-only
   * writes of one key, through any nodes, exactly one succeeds.
   */
  1: optional bool create_only,
  /**
   * A content type (e.g. "text/plain", at most 256 bytes) stored with the
   * value and returned by `describe`. `append` keeps the value's own.
   */
  2: optional string content_type,
  /**
   * A short description (at most 1,024 bytes) stored with the value and
   * returned by `describe`. `append` keeps the value's own.
   */
  3: optional string description,
  /**
   * A token from `lock`: the write is decided at the key's owner, one at
   * a time with the key's lease requests, and refused STALE_TOKEN (nothing
   * changed) unless `fence` is the newest lease granted on the key and
   * that lease was not unlocked. A lease that expired but that nobody took
   * since still fences with its token: only a newer lease supersedes it.
   */
  4: optional i64 fence,
}

/**
 * One key's answer in `fetch_many`: `value` set when the key holds one,
 * `error` set when this key could not be read (the others still were);
 * neither: the key is not stored.
 */
struct Fetched {
  1: optional binary value,
  2: optional StoreError error,
}

/** One write of `store_many`. */
struct Item {
  1: binary key,
  2: binary value,
}

/** One write's outcome in `store_many`: `error` unset when it was stored. */
struct Outcome {
  1: optional StoreError error,
}

/**
 * A lease on a key (README, Leases), as `lock` and `renew` grant it.
 */
struct Lease {
  /**
   * The fencing token: it grows with every lease granted on the key and is
   * never given twice (unlock and expiry keep the count). Pass it as
   * `WriteOptions.fence` so a write is refused once a newer lease exists,
   * and to `unlock` and `renew`.
   */
  1: i64 token,
  /** When the lease expires by itself: wall-clock milliseconds since the epoch. */
  2: i64 expires_ms,
}

/** What a forwarded lease request (`relay_lease`) asks the key's owner to do. */
enum LeaseOp {
  /** `lock(key, ttl_ms)`. */
  LOCK = 1,
  /** `unlock(key, token)`. */
  UNLOCK = 2,
  /** `renew(key, token, ttl_ms)`. */
  RENEW = 3,
}

service Store extends locator.Locator {
  // ---- the original interface ----
  /** The value stored at `key`, routed to its owner; "" when absent. */
  string get(1: string key),
  /** Store a value at the key's owner. Not acknowledged: use `store` for that. */
  oneway void put(1: string key, 2: string value),

  // ---- thrifty-p2p additions ----
  /** Read any bytes key, routed to its owner. */
  Lookup fetch(1: binary key) throws (1: StoreError err),
  /**
   * Write any bytes value, routed to the key's replicas; returns once a write
   * quorum of them stored it.
   */
  void store(1: binary key, 2: binary value) throws (1: StoreError err),
  /**
   * `store` with options (see `WriteOptions`): create-only, and a content
   * type and description stored with the value (`describe` returns them).
   * A plain `store` replaces the value and drops its metadata.
   */
  void store_with(1: binary key, 2: binary value, 3: WriteOptions options) throws (1: StoreError err),
  /**
   * Appends `value` to the value at `key`, atomically at the key's owner
   * (concurrent appends through any nodes are each applied exactly once, in
   * some order), and returns the value's new size. A missing key is created;
   * the value's metadata is kept. A streamed value answers STREAMED; a result
   * over `--max-value-bytes`, TOO_LARGE. `options` may carry `create_only`
   * (append only to a missing key) and `fence`.
   */
  i64 append(1: binary key, 2: binary value, 3: WriteOptions options) throws (1: StoreError err),
  /** Delete a key (it leaves a versioned tombstone, so no old copy comes back). */
  void erase(1: binary key) throws (1: StoreError err),
  /** Counters describing this node (keys, bytes, replication backlog, hints, ...). */
  map<string, i64> stats(),
  /**
   * A page of the keys this node holds copies of (tombstones included,
   * internal keys (chunks, lease records) left out), in the listing order every node shares:
   * by the top six bits of the key's ring position (MD5, as `locate` uses),
   * then by the key's bytes. A position in that order is one byte (those six
   * bits) followed by a key; `start` is where the page starts (the first key
   * at or after it; "" for the beginning), normally a `resume` that an earlier
   * page returned, from any node. `prefix` keeps the keys that start with it.
   * At most `limit` keys (1 to 10,000) and a few MiB; a page may be short,
   * even empty with `resume` set, when the node looked at many keys to fill it.
   * To list a ring, ask every member for a page from the same `start`, keep
   * the keys before the smallest `resume`, the newest copy of each, and go on
   * from there (what the Rust client and `storelist` do; README, Listing).
   */
  KeyPage list_keys(1: binary prefix, 2: binary start, 3: i32 limit) throws (1: StoreError err),
  /**
   * Reads many keys in one call: one `Fetched` per key, in the order given.
   * Each key is read as `fetch` reads it (routed to its owner, every key at
   * once), so each answer is as consistent as a `fetch`, but the batch is
   * not a snapshot: a write landing meanwhile may be seen for one key and
   * not another. At most 10,000 keys; the values answered add up to at most
   * `--max-value-bytes` (64 MiB by default): a key past that answers
   * TOO_LARGE in its `error` (fetch it again, alone or in a later batch). A
   * streamed value answers STREAMED there, as `fetch` does.
   */
  list<Fetched> fetch_many(1: list<binary> keys) throws (1: StoreError err),
  /**
   * Writes many keys in one call: one `Outcome` per item, in the order
   * given. Each item is written as `store` writes it (acknowledged by a
   * write quorum of its replicas; all items at once), and each stands
   * alone: the batch is not atomic, so some items may be stored and others
   * refused, and a reader may see some before the others. Items for the
   * same key are written in the order given. At most 10,000 items in one
   * message (`--max-value-bytes` bounds the message).
   */
  list<Outcome> store_many(1: list<Item> items) throws (1: StoreError err),
  /**
   * This node's whole member table, read-only: every member it knows, itself
   * included, with its incarnation and status (departed members too, as
   * DEAD or LEFT). For status tools; nodes exchange tables with `gossip`.
   */
  list<locator.Member> members(),

  // ---- large values (README, Large values) ----
  // A value larger than one message (`--max-value-bytes`, 64 MiB by default;
  // a client may choose smaller parts) is stored streamed: in parts under
  // internal keys, with a manifest at the key written last, so a reader sees
  // the old value or the whole new one, never a mix. `fetch` of such a key
  // answers StoreError STREAMED; these methods read and write it with a
  // bounded buffer from any Thrift client. Sizes up to 2^63 - 1 bytes are
  // representable; a node takes at most 65,536 parts per upload (512 GiB in
  // parts of 8 MiB; 4 GiB in parts of 64 KiB).

  /**
   * What the key holds: whether it exists, its size, whether it is streamed,
   * its part size and count, and its identity (`id`) for `read_range`. Works
   * for plain and streamed values alike.
   */
  ValueInfo describe(1: binary key) throws (1: StoreError err),
  /**
   * Up to `length` bytes of the value at `key` from byte `offset` on, plain
   * or streamed: fewer only at the end of the value (an empty answer at its
   * end). `length` is at most 16 MiB (16,777,216), or the node's
   * `--max-value-bytes` if smaller, and a range spans at most 1,024 parts;
   * a longer one is refused with REFUSED. The node reads the parts covering the range and checks
   * each against its MD5 in the manifest. With `id` from `describe`, a key
   * that now holds another value answers CHANGED, so a reader never stitches
   * two values together; with `id` 0 (no value has that id), each call reads
   * whatever the key holds then. A key that holds nothing answers REFUSED
   * (CHANGED when `id` is given).
   */
  binary read_range(1: binary key, 2: i64 offset, 3: i32 length, 4: i64 id) throws (1: StoreError err),
  /**
   * Opens an upload to `key` on this node and returns its id. Upload state
   * lives on this node: send every part and the commit to the same node. At
   * most 256 uploads are open on a node at once (REFUSED beyond), and an
   * upload must be committed within half the node's `--chunk-grace` (5
   * minutes by default; `stats` reports the grace as `chunk_grace_ms`), or
   * it expires (NO_SUCH_UPLOAD) and its parts are collected. The key is
   * unchanged until `commit_upload`.
   */
  i64 begin_upload(1: binary key) throws (1: StoreError err),
  /**
   * Stores part `index` (0, 1, ...; at most 65,535) of an upload: 1 byte to
   * `--max-value-bytes` bytes, every part but the last of one length. Parts
   * may come in any order, and a part sent again replaces the earlier one;
   * one part at a time per index. Returns once a write quorum stored it.
   */
  void upload_part(1: binary key, 2: i64 upload, 3: i64 index, 4: binary data) throws (1: StoreError err),
  /**
   * Makes the upload the value at `key`, all at once: checks that parts 0 to
   * n-1 are all there and that all but the last have one length, then writes
   * the manifest at the key (readers see the old value or the new one, never
   * a mix) and erases the previous streamed value's parts. A refused commit
   * (REFUSED: a part missing or of the wrong length) leaves the key unchanged
   * and the upload open. Answers what `describe` would.
   */
  ValueInfo commit_upload(1: binary key, 2: i64 upload) throws (1: StoreError err),

  // ---- access control (see README, Security) ----
  /**
   * Step 1 of proving a secret on this connection: the caller sends a fresh
   * random `nonce` (16 to 64 bytes) and gets the node's own fresh nonce back.
   */
  binary hello(1: binary nonce),
  /**
   * Step 2: `proof` is HMAC-SHA256(secret, "thrifty-p2p/1 client " + role +
   * node nonce + caller nonce), with `role` "cluster" (the cluster secret:
   * every method) or "client" (the client secret: data methods). The answer
   * is HMAC-SHA256(secret, "thrifty-p2p/1 server " + role + caller nonce +
   * node nonce), so the caller knows the node holds the secret too. A wrong
   * proof is refused (UNAUTHORIZED) and closes the connection.
   */
  binary authenticate(1: string role, 2: binary proof) throws (1: StoreError err),

  // ---- leases (README, Leases) ----
  /**
   * Takes the lease on `key` for `ttl_ms` milliseconds (1 to 86,400,000,
   * one day), decided at the key's owner and stored replicated like a
   * value, so it outlives the node that granted it. Fails at once with
   * HELD when another lease on the key has not expired (the message says
   * until when); this call never waits (the Rust and Python clients retry
   * for as long as asked). A lease is free again when its holder unlocks
   * it or when it expires. The key's value is not touched: a lease only
   * guards writes that carry its token as their `fence`.
   */
  Lease lock(1: binary key, 2: i64 ttl_ms) throws (1: StoreError err),
  /**
   * Gives the lease back at once. STALE_TOKEN when `token` is not the
   * key's current lease (a newer one was granted, or it was unlocked
   * already): nothing changed. An expired lease not yet taken by anyone
   * else may still be unlocked by its token.
   */
  void unlock(1: binary key, 2: i64 token) throws (1: StoreError err),
  /**
   * Extends the lease `token` to expire `ttl_ms` from now (same bounds as
   * `lock`), keeping its token. STALE_TOKEN as for `unlock`.
   */
  Lease renew(1: binary key, 2: i64 token, 3: i64 ttl_ms) throws (1: StoreError err),
}

/**
 * Node to node: the methods peers call on each other. They travel on the same
 * port as the client methods (Thrift names methods on the wire, not services);
 * a node started with a cluster secret refuses each of them, and the 2009
 * ring-changing methods (`join`, `remove`, `add`, `die`, `debug`), on a
 * connection that has not proved that secret.
 */
service Peer extends Store {
  /**
   * A new node announces itself to a member of the ring. The receiver adds it,
   * spreads the news, and answers with its whole member table.
   */
  list<locator.Member> enter(1: locator.Member member),
  /**
   * Push-pull anti-entropy for membership: the caller sends its table and gets the
   * receiver's table back (after the receiver merged the caller's).
   */
  list<locator.Member> gossip(1: list<locator.Member> members),
  /**
   * Failure detection, indirect probe: the receiver pings `target` itself and
   * says whether it answered in time.
   */
  bool probe(1: locator.Location target),
  /**
   * Testing aid, refused unless the node runs with --fault-injection: while
   * `on`, the node drops every call from and to its peers (a partition).
   */
  void isolate(1: bool on),

  /** `fetch` forwarded by a node; `hops` counts the forwards so far. */
  Lookup relay_fetch(1: binary key, 2: i8 hops) throws (1: StoreError err),
  /**
   * `store` forwarded by a node; `hops` counts the forwards so far. `expires`
   * (microseconds since the epoch) is when the sender stops waiting: a relay
   * that arrives later (the receiver was paused) is dropped. `stamp` and
   * `origin` are the write's version, taken once by the node the client called:
   * every retry and every replica stores that same version, so a write that
   * arrives late can never bury a later one.
   */
  void relay_store(1: binary key, 2: binary value, 3: i8 hops, 4: i64 expires, 5: i64 stamp, 6: i32 origin) throws (1: StoreError err),
  /**
   * A create-only `store_with` (`append` false) or an `append`, forwarded
   * toward the key's owner, which serialises them per key; `value` is the
   * client's (the suffix for an append). Answers what `append` answers (0
   * for a create-only write).
   */
  i64 relay_write_with(1: binary key, 2: binary value, 3: WriteOptions options, 4: bool append, 5: i8 hops) throws (1: StoreError err),
  /** `erase` forwarded by a node; the other fields as for `relay_store`. */
  void relay_erase(1: binary key, 2: i8 hops, 3: i64 expires, 4: i64 stamp, 5: i32 origin) throws (1: StoreError err),
  /** This node's own copies of `keys`, with versions; absent keys are left out. */
  list<Entry> peek(1: list<binary> keys) throws (1: StoreError err),
  /**
   * Anti-entropy, step 1: `digests[b]` summarises the caller's copies in bucket
   * `b` of the keys both nodes replicate; the answer lists the buckets where the
   * receiver's summary differs.
   */
  list<i32> diff_buckets(1: locator.Location caller, 2: list<i64> digests) throws (1: StoreError err),
  /**
   * Anti-entropy, step 2: the caller's entries in `buckets` (shared keys only).
   * The receiver keeps the newer of each, and answers with its entries in those
   * buckets that are newer than the caller's or that the caller lacks.
   */
  list<Entry> reconcile(1: locator.Location caller, 2: list<i32> buckets, 3: list<Entry> entries) throws (1: StoreError err),
  /**
   * View agreement: `ring` is the caller's ring id (a digest of the members
   * it routes to); the answer is the receiver's. Nodes whose ids differ
   * disagree on where keys live, and neither vouches for its copies until
   * they agree again.
   */
  i64 heartbeat(1: i64 ring, 2: locator.Location caller),
  /** A coordinator's quorum read: the receiver's own copy of `key`, and whether it vouches for it. */
  Replica replica_read(1: binary key, 2: i64 ring) throws (1: StoreError err),
  /**
   * A coordinator's replication of writes. The receiver keeps the newer of each
   * entry, and acknowledges only if its ring id is `ring` (otherwise StoreError):
   * a write counts toward its quorum only on replicas that agree where it lives.
   */
  void replicate(1: list<Entry> entries, 2: i64 ring) throws (1: StoreError err),
  /**
   * Take over these entries (handoff on join and leave). For each
   * key the newer version wins. Returns once every entry is applied, so the sender
   * may then delete its copies.
   */
  void absorb(1: list<Entry> entries) throws (1: StoreError err),
  /**
   * `lock`, `unlock` or `renew` forwarded toward the key's owner, which
   * decides them one at a time per key; `hops` counts the forwards so far.
   * `ttl_ms` is unused by UNLOCK, `token` by LOCK. UNLOCK answers a Lease
   * with the token it released.
   */
  Lease relay_lease(1: binary key, 2: LeaseOp op, 3: i64 ttl_ms, 4: i64 token, 5: i8 hops) throws (1: StoreError err),
}
