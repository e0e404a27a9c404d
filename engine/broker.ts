/**
 * The broker: what assigns message ids and carries publications to whoever delivers them. It is
 * one interface with one implementation per backend (broker_memory.ts in one process; a Redis one
 * to carry the publications of other nodes), as centrifuge splits its broker from its history: the
 * broker assigns and carries, the history store (history.ts) keeps and reads.
 *
 * The broker reads no history. It appends to the store it is given, because a publication must be
 * kept before anyone sees it; reading is the hub's business (resume.ts, the history API), and the
 * hub is given the same HistoryStore. So the read contract (pages, `recovered`) lives in one place,
 * and a broker on one backend can sit beside a history on another.
 */
import type { Publication, Sender, StreamName } from "./stream.ts";

/**
 * Called with each publication the broker carries. It runs inside the broker's delivery loop, so
 * it should hand the publication on and return: while it runs, no other publication is delivered.
 * What it throws is reported (see MemoryBrokerOptions.onError) and stops nothing.
 */
export type PublicationHandler = (publication: Publication, origin?: Origin) => void;

/**
 * Where a cluster's publication came from, as a cluster's broker tells its subscribers: the node
 * that published it, and how many connections the cluster's presence registry listed for its
 * stream when it was published (engine/presence.ts). A single node's broker tells nothing.
 */
export interface Origin {
  node: string;
  reach: number;
}

/**
 * Assigns ids and carries publications.
 *
 * Ordering: every subscriber is handed every publication that was kept, once, in increasing id
 * order across all streams, not only within one. So a connection that follows several streams (its
 * uid, its groups, `all`) gets them in id order whatever order the store finished the appends in,
 * and a subscriber that has been handed id N knows that every publication below N was handed to it
 * already or was never kept; resume.ts rests on that. The price is that one slow append holds back
 * the publications issued after it, in every stream, until it settles.
 */
export interface Broker {
  /**
   * Publishes `data` to `stream`: assigns the next id (increasing across all streams), stamps `ts`
   * with the broker's clock, appends it to the history store when there is one and waits for the
   * append, then hands it to every subscriber, in id order (see Broker). Resolves with the
   * publication once the subscribers have had it; by then it is as durable as the store makes
   * anything, and `read` returns it. Rejects with the store's error when the append rejects (no
   * subscriber ever sees that publication, and its id is skipped), with the id source's error when
   * no id could be assigned, and with an Error after `close`.
   */
  publish(stream: StreamName, data: string, from?: Sender): Promise<Publication>;

  /**
   * Publishes to one connection (`client:<id>`), on whichever node it is: as `publish`, with the
   * next id and in id order across all streams, but kept nowhere, since a client id dies with its
   * socket. In id order, so that a client that resumes after the last id it got (the SDK) never
   * skips a stream message issued before it whose append was still in flight.
   */
  publishToClient(client: string, data: string): Promise<Publication>;

  /**
   * Hands `handler` every publication delivered from now on, until the returned function is
   * called; after that call it is never called again. One subscriber is the local hub.
   */
  subscribe(handler: PublicationHandler): () => void;

  /**
   * Stops taking publications (publish rejects from now on), waits until every publication
   * already issued is delivered or rejected, then drops the subscribers. It does not close the
   * history store: whoever made the store closes it, after the broker.
   */
  close(): Promise<void>;
}
