// The console's one script. The pages work as rendered; this keeps the jobs table current,
// loads and follows a job's log (pages, then the API's SSE stream, which resumes by
// Last-Event-ID), searches it, and acts through the same JSON API the CLI calls, with the
// page's CSRF token. Every text it shows goes in as text, never as markup.
'use strict';
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? '';
  const page = document.body.dataset.page;

  // Calls the API as the signed-in person; throws the API's own description of a refusal.
  async function api(method, path, body) {
    const headers = { 'Accept': 'application/json', 'X-CSRF-Token': csrf };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let answer = null;
    try { answer = await response.json(); } catch { answer = null; }
    if (!response.ok) {
      const said = answer && (answer.error_description || answer.message || answer.error);
      throw new Error(said || `${response.status} ${response.statusText}`);
    }
    return answer;
  }

  // Typing `/` focuses the page's search, unless the person is typing already.
  function typing(event) {
    const target = event.target;
    return target instanceof HTMLInputElement || target instanceof HTMLSelectElement ||
      target instanceof HTMLTextAreaElement || event.ctrlKey || event.metaKey || event.altKey;
  }

  for (const button of document.querySelectorAll('button[data-copy]')) {
    button.addEventListener('click', async () => {
      const source = document.getElementById(button.dataset.copy);
      const text = source?.textContent ?? '';
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = 'Copied';
      } catch {
        const range = document.createRange();
        range.selectNodeContents(source);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        button.textContent = 'Selected: press Ctrl+C';
      }
    });
  }

  // The jobs table, asked for again every few seconds while the page is visible. Rows that
  // changed are swapped; the row holding the focus keeps it.
  function liveJobs() {
    const table = document.getElementById('jobs');
    if (!table) return;
    const tbody = table.tBodies[0];
    const url = new URL(location.href);
    url.searchParams.set('rows', 'true');
    async function refresh() {
      if (document.hidden) return;
      const response = await fetch(url, { credentials: 'same-origin' });
      if (!response.ok) return;
      const template = document.createElement('template');
      template.innerHTML = await response.text(); // the server's own escaped rows
      const fresh = [...template.content.querySelectorAll('tr[data-id]')];
      const focused = document.activeElement?.closest?.('tr[data-id]')?.dataset.id;
      const old = new Map([...tbody.rows].map((row) => [row.dataset.id, row]));
      const sameOrder = fresh.length === old.size &&
        fresh.every((row, i) => tbody.rows[i]?.dataset.id === row.dataset.id);
      if (sameOrder) {
        for (const row of fresh) {
          const before = old.get(row.dataset.id);
          if (before.innerHTML !== row.innerHTML) before.replaceWith(row);
        }
      } else {
        tbody.replaceChildren(...fresh);
      }
      if (focused) tbody.querySelector(`tr[data-id="${CSS.escape(focused)}"] a`)?.focus();
    }
    setInterval(() => { refresh().catch(() => {}); }, 2000);
  }

  function jobPage() {
    const notice = document.getElementById('notice');
    const stateLabel = document.getElementById('job-state');
    const cancel = document.getElementById('cancel');
    const view = document.getElementById('log');
    const jobId = view?.dataset.job ?? cancel?.dataset.job;
    const say = (text) => { if (notice) notice.textContent = text; };

    function showState(job) {
      const state = job.state ?? job.status;
      stateLabel.textContent = state;
      stateLabel.className = `state state-${state}`;
      const timeline = document.getElementById('timeline');
      const phases = [...timeline.children];
      const at = phases.findIndex((li) => li.textContent.replace(' (now)', '') === job.phase);
      const ended = ['succeeded', 'failed', 'timeout', 'cancelled'].includes(state);
      phases.forEach((li, i) => {
        const name = li.textContent.replace(' (now)', '');
        const current = i === at && !(ended && name === 'finished');
        li.className = current ? 'current' : (ended || i < at ? 'done' : 'todo');
        li.textContent = current ? `${name} (now)` : name;
        if (current) li.setAttribute('aria-current', 'step'); else li.removeAttribute('aria-current');
      });
      return ended;
    }

    if (cancel) {
      cancel.addEventListener('click', async () => {
        cancel.disabled = true;
        say('Cancelling…');
        try {
          const job = await api('POST', `/v1/jobs/${encodeURIComponent(jobId)}/cancel`);
          showState(job);
          say('Cancelled.');
          cancel.remove();
        } catch (error) {
          say(`Not cancelled: ${error.message}`);
          cancel.disabled = false;
        }
      });
    }

    // A follow-up: the same POST /v1/jobs as `ckrv run --cloud --continue ID --feedback …`.
    const followUp = document.getElementById('follow-up');
    followUp?.addEventListener('submit', async (event) => {
      event.preventDefault();
      const feedback = document.getElementById('feedback').value.trim();
      if (!feedback) { say('Write the feedback first.'); return; }
      say('Starting the follow-up…');
      try {
        const job = await api('POST', '/v1/jobs', {
          spec_content: '', git_repo_url: '', continues: followUp.dataset.job, feedback,
        });
        location.assign(`/jobs/${encodeURIComponent(job.id)}`);
      } catch (error) {
        say(`Not started: ${error.message}`);
      }
    });

    // The job's state, until it ends.
    async function watchState() {
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 2000));
        if (document.hidden) continue;
        try {
          const job = await api('GET', `/v1/jobs/${encodeURIComponent(jobId)}`);
          if (showState(job)) {
            cancel?.remove();
            say(`The job ended: ${job.state ?? job.status}. Reload the page for its change.`);
            return;
          }
        } catch { /* the next look may answer */ }
      }
    }
    if (view && view.dataset.ended !== 'true') watchState();
    if (view) new LogView(view, jobId, say).start();
  }

  const ERROR_WORDS = /\b(error|failed|fatal|panicked)\b/i;

  // A log of any length: only the lines in sight are in the document.
  class LogView {
    static LINE = 20;
    static PAGE = 10000;

    constructor(view, jobId, say) {
      this.view = view;
      this.space = view.querySelector('.log-space');
      this.jobId = jobId;
      this.say = say;
      this.lines = [];
      this.last = 0;
      this.hits = [];
      this.current = -1;
      this.query = '';
      this.pending = false;
      this.follow = document.getElementById('log-follow');
      this.count = document.getElementById('log-count');
      this.search = document.getElementById('log-search');
      view.addEventListener('scroll', () => {
        const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - LogView.LINE * 2;
        if (this.follow && !this.programmatic) this.follow.checked = atBottom;
        this.programmatic = false;
        this.draw();
      });
      this.search?.addEventListener('input', () => this.find(this.search.value));
      this.search?.addEventListener('keydown', (event) => {
        if (event.key === 'Enter') { event.preventDefault(); this.step(event.shiftKey ? -1 : 1); }
      });
      document.getElementById('log-next')?.addEventListener('click', () => this.step(1));
      document.getElementById('log-prev')?.addEventListener('click', () => this.step(-1));
      document.getElementById('log-error')?.addEventListener('click', () => this.nextError());
      this.follow?.addEventListener('change', () => { if (this.follow.checked) this.toBottom(); });
      document.addEventListener('keydown', (event) => {
        if (typing(event)) return;
        if (event.key === '/') { event.preventDefault(); this.search?.focus(); }
        else if (event.key === 'e') this.nextError();
        else if (event.key === 'n') this.step(1);
        else if (event.key === 'N') this.step(-1);
      });
    }

    async start() {
      const id = encodeURIComponent(this.jobId);
      try {
        for (;;) {
          const page = await api('GET', `/v1/jobs/${id}/logs?after=${this.last}&limit=${LogView.PAGE}`);
          this.append(page.logs);
          if (page.logs.length < LogView.PAGE) {
            if (['succeeded', 'failed', 'timeout', 'cancelled'].includes(page.job_state)) {
              this.status();
              return;
            }
            break;
          }
        }
      } catch (error) {
        this.count.textContent = `The log could not be read: ${error.message}`;
        return;
      }
      const source = new EventSource(`/v1/jobs/${id}/logs?follow=true&after=${this.last}`);
      source.addEventListener('log', (event) => {
        try { this.append([JSON.parse(event.data)]); } catch { /* not an entry */ }
      });
      source.addEventListener('end', () => { source.close(); this.status(); });
      source.addEventListener('error', (event) => {
        if (event.data) { source.close(); this.count.textContent = `The log stream failed: ${event.data}`; }
      });
    }

    append(entries) {
      for (const entry of entries) {
        const sequence = entry.sequence ?? this.last + 1;
        if (sequence <= this.last) continue;
        this.last = sequence;
        const text = `${entry.source}: ${entry.message}`;
        // Agents write their tools' failures at level info: those read as errors too.
        const level = entry.level === 'info' && ERROR_WORDS.test(entry.message) ? 'error' : entry.level;
        const line = { sequence, level, text };
        this.lines.push(line);
        if (this.query && line.text.toLowerCase().includes(this.query)) {
          this.hits.push(this.lines.length - 1);
        }
      }
      this.schedule();
    }

    schedule() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.space.style.height = `${this.lines.length * LogView.LINE}px`;
        if (this.follow?.checked) this.toBottom();
        this.draw();
        this.status();
      });
    }

    toBottom() {
      this.programmatic = true;
      this.view.scrollTop = this.view.scrollHeight;
    }

    draw() {
      const { LINE } = LogView;
      const first = Math.max(0, Math.floor(this.view.scrollTop / LINE) - 10);
      const end = Math.min(this.lines.length, Math.ceil((this.view.scrollTop + this.view.clientHeight) / LINE) + 10);
      const hits = new Set(this.hits);
      const rows = [];
      for (let i = first; i < end; i++) {
        const line = this.lines[i];
        const row = document.createElement('div');
        row.className = `log-line ${line.level ?? ''}${hits.has(i) ? ' hit' : ''}${i === this.current ? ' current' : ''}`;
        row.style.top = `${i * LINE}px`;
        const sequence = document.createElement('span');
        sequence.className = 'seq';
        sequence.textContent = line.sequence;
        row.append(sequence, document.createTextNode(line.text));
        rows.push(row);
      }
      this.space.replaceChildren(...rows);
    }

    status() {
      const lines = `${this.lines.length} lines`;
      const matches = this.query
        ? `; ${this.hits.length} match${this.hits.length === 1 ? '' : 'es'}${this.hits.length ? ` (${this.hits.indexOf(this.current) + 1} of ${this.hits.length})` : ''}`
        : '';
      this.count.textContent = lines + matches;
    }

    find(query) {
      this.query = query.trim().toLowerCase();
      this.hits = [];
      if (this.query) {
        this.lines.forEach((line, i) => { if (line.text.toLowerCase().includes(this.query)) this.hits.push(i); });
      }
      this.current = -1;
      this.draw();
      this.status();
    }

    step(direction) {
      if (!this.hits.length) return;
      const next = direction > 0
        ? this.hits.find((i) => i > this.current) ?? this.hits[0]
        : [...this.hits].reverse().find((i) => i < this.current) ?? this.hits[this.hits.length - 1];
      this.show(next);
    }

    nextError() {
      const from = this.current;
      let at = this.lines.findIndex((line, i) => i > from && line.level === 'error');
      if (at < 0) at = this.lines.findIndex((line) => line.level === 'error');
      if (at < 0) { this.count.textContent = `${this.lines.length} lines; no errors`; return; }
      this.show(at);
      this.count.textContent = `Error at line ${this.lines[at].sequence}`;
    }

    show(index) {
      this.current = index;
      if (this.follow) this.follow.checked = false;
      this.programmatic = true;
      this.view.scrollTop = Math.max(0, index * LogView.LINE - this.view.clientHeight / 2);
      this.draw();
      this.status();
    }
  }

  // Buttons that call the API (`data-method`, `data-path`), then show the page anew.
  function apiButtons() {
    const notice = document.getElementById('notice');
    for (const button of document.querySelectorAll('button[data-path]')) {
      button.addEventListener('click', async () => {
        button.disabled = true;
        try {
          await api(button.dataset.method, button.dataset.path);
          if (notice) notice.textContent = 'Done.';
          location.reload();
        } catch (error) {
          if (notice) notice.textContent = `Refused: ${error.message}`;
          button.disabled = false;
        }
      });
    }
  }

  // Last: the class above is defined only once its declaration has run.
  if (page === 'jobs') liveJobs();
  if (page === 'job') jobPage();
  apiButtons();
})();
