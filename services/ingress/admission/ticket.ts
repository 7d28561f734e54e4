import type { AdmissionTicket } from '../call-registry.js';
import type { TenantState } from './state.js';

export type TicketState = 'held' | 'queued' | 'accepted' | 'ended';

/** What a ticket reports its call's transitions to (the admission). */
export interface TicketOwner {
  onAccepted(ticket: Ticket): void;
  onEnded(ticket: Ticket, answered: boolean): void;
}

/**
 * One admitted call as the admission follows it: held at the ingress, queued in the broker,
 * accepted by a worker, ended. The call registry reports the transitions; each counts once.
 */
export class Ticket implements AdmissionTicket {
  state: TicketState = 'queued';
  /** Queued at once while its tenant was under its share: it goes ahead of backlogs (at high). */
  sparse = false;
  private onRelease: (() => void) | undefined;
  private released = false;

  constructor(
    private readonly owner: TicketOwner,
    /** The tenant on the call's pool; undefined for a pool without admission state. */
    readonly tenantState: TenantState | undefined,
    readonly cost: number,
    /** When the call was admitted (enqueued or held), ms since the epoch. */
    readonly sinceMs: number,
  ) {}

  get held(): boolean {
    return this.state === 'held';
  }

  whenReleased(enqueue: () => void): void {
    if (this.released) enqueue();
    else this.onRelease = enqueue;
  }

  /** Called by the admission when the held call may go to the broker. */
  release(): void {
    this.released = true;
    const enqueue = this.onRelease;
    this.onRelease = undefined;
    enqueue?.();
  }

  accepted(): void {
    this.owner.onAccepted(this);
  }

  ended(answered: boolean): void {
    this.onRelease = undefined;
    this.owner.onEnded(this, answered);
  }
}
