// The locator service: ring membership and key placement.
//
// Everything the 2009 program defined (see PROTOCOL.md, beside this file) keeps its name,
// field ids and types. Methods added for thrifty-p2p are acknowledged (never
// oneway) and carry keys as `binary`, so any bytes round-trip.

namespace py locator
namespace rs locator

/** A node's address. Ports above 32767 travel as negative numbers. */
struct Location {
  1: string address,
  2: i16 port,
}

/** How a member stands in the ring, as gossiped between thrifty-p2p nodes. */
enum MemberStatus {
  /** Serving and owning its share of the ring. */
  ALIVE = 1,
  /** Left on purpose, after handing its keys over. */
  LEFT = 2,
  /** Could not be reached and was dropped by its peers. */
  DEAD = 3,
  /** Did not answer probes; dropped unless it refutes in time. Still owns its share. */
  SUSPECT = 4,
  /** Handing its keys over before it leaves: no longer routed to or replicated to. */
  LEAVING = 5,
}

/**
 * One row of a node's member table. A newer incarnation always wins; within one
 * incarnation ALIVE < SUSPECT < LEAVING < DEAD < LEFT. A node that restarts, or that hears it
 * was declared dead while still running, takes a new, higher incarnation.
 */
struct Member {
  1: Location location,
  2: i64 incarnation,
  3: MemberStatus status,
  /**
   * The member's weight (`location --weight`, 1 to 64): its share of the ring
   * grows with it. Absent means 1, which is what older nodes send; sent only
   * when above 1. A row with a weight outside 1 to 64 is ignored.
   */
  4: optional i32 weight,
}

service Base {
  void ping(),
  string service_type(),
  list<string> service_types(),
  oneway void debug(),
  oneway void die(),
}

service Locator extends Base {
  // ---- the original interface ----
  oneway void join(1: Location location),
  oneway void remove(1: Location location, 2: list<Location> authorities),
  oneway void add(1: Location location, 2: list<Location> authorities),
  list<Location> get_all(),
  Location get_node(1: string key),

  // ---- thrifty-p2p additions ----
  /** The member that owns a key given as bytes (address "" and port 0 when empty). */
  Location locate(1: binary key),
  /** Up to `count` members that hold a key, owner first (its preference list). */
  list<Location> replicas(1: binary key, 2: i32 count),
}
