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
    this.index++;
    this.run();
  }

  run(): void {
    while (this.index < this.filters.length) {
      if (this.finished) return;
      if (this.filters[this.index].onRequest(this) !== CONTINUE) return;
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
