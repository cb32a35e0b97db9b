/**
 * Runs a request through the filters in order. The last filter is always the
 * router, which leaves its decision in `target`.
 */
import { CONTINUE, type FilterContext, type FilterFactory, type LocalReply, type StreamFilter } from './filter';
import type { RequestView } from './request-view';
import type { RouteTarget } from './router';

export type ChainDone = (reply: LocalReply | null, target: RouteTarget | null) => void;

export class StreamContext implements FilterContext {
  target: RouteTarget | null = null;
  private index = 0;
  private finished = false;
  /** Inside a filter's onRequest: a resume() there means "continue", not a second run. */
  private inFilter = false;
  private resumedInFilter = false;
  /** Stopped by a filter and waiting for its resume(). */
  private paused = false;

  constructor(
    readonly view: RequestView,
    private readonly filters: StreamFilter[],
    private readonly done: ChainDone,
  ) {}

  reply(r: LocalReply): void {
    if (this.finished) return;
    this.finished = true;
    this.done(r, null);
  }

  resume(): void {
    if (this.finished) return;
    if (this.inFilter) { this.resumedInFilter = true; return; }
    if (!this.paused) return; // a second resume() for the same stop
    this.paused = false;
    this.index++;
    this.run();
  }

  run(): void {
    while (this.index < this.filters.length) {
      if (this.finished) return;
      this.inFilter = true;
      this.resumedInFilter = false;
      let status;
      try {
        status = this.filters[this.index].onRequest(this);
      } finally {
        this.inFilter = false;
      }
      if (this.finished) return;
      if (status !== CONTINUE && !this.resumedInFilter) { this.paused = true; return; }
      this.index++;
    }
    if (this.finished) return;
    this.finished = true;
    this.done(null, this.target);
  }
}

export class FilterChain {
  constructor(private readonly factories: readonly FilterFactory[]) {}

  /** Runs the chain; `done` is called exactly once, possibly synchronously. */
  run(view: RequestView, done: ChainDone): StreamContext {
    const filters = this.factories.map((f) => f.create());
    const ctx = new StreamContext(view, filters, done);
    ctx.run();
    return ctx;
  }
}
