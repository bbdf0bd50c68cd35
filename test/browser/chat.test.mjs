// test/browser/chat.test.mjs — the chat page (producer/web/) in Debian's Chromium, driven by
// playwright-core, against a real producer and consumer (started by test/integration/browser_chat.sh).
//
// Two browser contexts are two users (alice, bob) in one room, then in a room named by a string
// id (team-alpha-<nonce>: rooms are ids, docs/protocol.md §1). The services run with identity
// tokens on (protocol.md §8): both users log in through the page (development tokens from the
// producer's /dev/token), and a last phase, with the producer restarted to hand out tokens of a
// few seconds, proves a token expiring (close 4401) costs no message. Prints one TAP line per
// assertion ("ok - ..." / "not ok - ...") and exits 1 when any failed. Every wait is for a
// condition with a timeout; nothing asserts on speed.
//
// Environment (set by browser_chat.sh):
//   CHATFLOW_PAGE_URL     http://127.0.0.1:<producer port>/  (the page and the producer socket)
//   CHATFLOW_EVENTS_URL   ws://127.0.0.1:<consumer port>      (what /config.json says, for routing)
//   CHATFLOW_API_URL      http://127.0.0.1:<consumer admin port> (the room API, for bare requests)
//   CHATFLOW_ROOM         room to use
//   CHATFLOW_SHORT_TTL_S  token lifetime of the expiry phase (default 5)
//   CHATFLOW_TEST_CONTROL a folder: this script writes stop-consumer / start-consumer /
//                         restart-producer (holding a token TTL) there and waits for
//                         consumer-stopped / consumer-started / producer-restarted, which the
//                         shell writes
//   TEST_LOGDIR           screenshots and the pages' console logs go here
//   CHROMIUM              the browser (default /usr/bin/chromium)
import { chromium } from 'playwright-core';
import { existsSync, mkdirSync, writeFileSync, appendFileSync, rmSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request as httpRequest } from 'node:http';

const PAGE_URL = need('CHATFLOW_PAGE_URL');
const EVENTS_URL = need('CHATFLOW_EVENTS_URL').replace(/\/+$/, '');
const API_URL = need('CHATFLOW_API_URL').replace(/\/+$/, '');
const ROOM = need('CHATFLOW_ROOM');
const SHORT_TTL_S = Number(process.env.CHATFLOW_SHORT_TTL_S || 5);
const CONTROL = need('CHATFLOW_TEST_CONTROL');
const LOGDIR = need('TEST_LOGDIR');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 20000;          // default wait for a condition
const DEADLINE_MS = 480000;  // the whole script, so a hang cannot outlive test/run's timeout

function need(name) {
  const v = process.env[name];
  if (!v) { console.log(`not ok - environment ${name} is set`); process.exit(1); }
  return v;
}

// ------------------------------------------------------------------ TAP

let failed = 0;
const note = (s) => console.log(`# ${s}`);
function ok(desc) { console.log(`ok - ${desc}`); }
function notOk(desc, err) {
  failed++;
  console.log(`not ok - ${desc}`);
  if (err) for (const line of String(err.stack || err).split('\n').slice(0, 6)) note(`  ${line}`);
}
// check(desc, fn): one TAP line; a failure is reported and the run goes on.
async function check(desc, fn) {
  try { await fn(); ok(desc); return true; } catch (e) { notOk(desc, e); return false; }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
// Waits until cond() holds; fails with what() after the timeout.
async function until(cond, what, timeout = WAIT) {
  const end = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > end) throw new Error(what());
    await sleep(50);
  }
}

// ------------------------------------------------------------------ page helpers

const nonce = Math.random().toString(36).slice(2, 8);
const USER_A = `alice${nonce.slice(0, 4)}`;
const USER_B = `bob${nonce.slice(0, 4)}`;

// The shell restarts a service when asked: a file each way (the request may carry a value).
async function askShell(request, answer, timeoutMs, content = '') {
  rmSync(join(CONTROL, answer), { force: true });
  writeFileSync(join(CONTROL, `${request}.tmp`), content);
  renameSync(join(CONTROL, `${request}.tmp`), join(CONTROL, request)); // seen whole, never half-written
  const until = Date.now() + timeoutMs;
  while (!existsSync(join(CONTROL, answer))) {
    if (Date.now() > until) throw new Error(`the shell did not answer ${request} with ${answer}`);
    await sleep(100);
  }
}

async function joinRoom(page, username) {
  await page.goto(PAGE_URL);
  await submitJoin(page, username, ROOM);
  await waitConnected(page);
}

// Fills the join form and submits it (the page must show the form).
async function submitJoin(page, username, room) {
  await page.getByRole('textbox', { name: 'User name' }).fill(username);
  await page.getByRole('textbox', { name: 'Room' }).fill(String(room));
  await page.getByRole('button', { name: 'Join' }).click();
}

// Leaves the room through the page's Leave button; the join form is shown again.
async function leaveRoom(page) {
  await page.getByRole('button', { name: 'Leave' }).click();
  await page.locator('#join').waitFor({ state: 'visible', timeout: WAIT });
}

function waitConnected(page, timeout = WAIT) {
  return page.waitForSelector('#conn[data-producer="open"][data-consumer="open"]', { timeout });
}

// Records every data-status a message element takes, per clientMessageId, so the test can check
// the sequence sending -> sent -> delivered -> read without racing the page.
function recordStatuses(page) {
  return page.evaluate(() => {
    window.__statusLog = {};
    new MutationObserver((records) => {
      for (const r of records) {
        const li = r.target;
        const id = li.dataset && li.dataset.clientMessageId;
        if (!id || !li.dataset.status) continue;
        const log = (window.__statusLog[id] ||= []);
        if (log[log.length - 1] !== li.dataset.status) log.push(li.dataset.status);
      }
    }).observe(document.getElementById('messages'), { subtree: true, attributes: true, attributeFilter: ['data-status', 'data-client-message-id'] });
  });
}
const statusLog = (page, cid) => page.evaluate((id) => (window.__statusLog || {})[id] || [], cid);

// Types and sends a message; returns the clientMessageId the page gave it.
async function send(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
  const li = ownMessage(page, text);
  await li.waitFor({ timeout: WAIT });
  return li.getAttribute('data-client-message-id');
}

const messagesWithText = (page, text) =>
  page.locator('#messages li').filter({ has: page.locator('p.text', { hasText: new RegExp(`^${escapeRe(text)}$`) }) });
const ownMessage = (page, text) => messagesWithText(page, text).and(page.locator('li.own'));
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

async function waitStatus(page, text, statuses, timeout = WAIT) {
  const sel = statuses.map((s) => `[data-status="${s}"]`).join(',');
  await ownMessage(page, text).and(page.locator(sel)).waitFor({ timeout });
}

// Each text appears exactly once on the page, in this order, and no message element is doubled.
async function assertShownOnce(page, texts) {
  const shown = await page.$$eval('#messages li p.text', (ps) => ps.map((p) => p.textContent));
  for (const t of texts) {
    const n = shown.filter((s) => s === t).length;
    assert(n === 1, `"${t.slice(0, 40)}" is shown ${n} times`);
  }
  const order = texts.map((t) => shown.indexOf(t));
  assert(order.every((v, i) => i === 0 || v > order[i - 1]), `out of order: positions ${order.join(',')}`);
  const ids = await page.$$eval('#messages li[data-message-id]', (ls) => ls.map((l) => l.dataset.messageId));
  assert(new Set(ids).size === ids.length, `a messageId is shown twice (${ids.length} elements, ${new Set(ids).size} ids)`);
}

async function waitShown(page, texts, timeout = WAIT) {
  for (const t of texts) await messagesWithText(page, t).first().waitFor({ timeout });
}

async function screenshot(page, name) {
  const path = join(LOGDIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  note(`screenshot ${path}`);
}

function watchPage(page, name) {
  const log = join(LOGDIR, `console-${name}.log`);
  // tokens: every /dev/token answer the page got (its logins and renewals), newest last.
  const state = { errors: [], outside: [], console: [], tokens: [] };
  page.on('console', (m) => {
    state.console.push(m.text());
    appendFileSync(log, `[${m.type()}] ${m.text()}\n`);
  });
  page.on('response', async (r) => {
    if (new URL(r.url()).pathname !== '/dev/token' || r.status() !== 200) return;
    try { state.tokens.push(await r.json()); } catch (e) { /* the page went away meanwhile */ }
  });
  page.on('pageerror', (e) => { state.errors.push(String(e)); appendFileSync(log, `[pageerror] ${e}\n`); });
  page.on('request', (r) => {
    const host = new URL(r.url()).hostname;
    if (host !== '127.0.0.1' && host !== 'localhost') state.outside.push(r.url());
  });
  return state;
}

// The status of a WebSocket handshake (101, or the refusal's 401/403), and the refusal's body:
// what a browser is never shown.
function handshakeStatus(url) {
  return new Promise((resolve, reject) => {
    const u = new URL(url.replace(/^ws/, 'http'));
    const req = httpRequest(u, {
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': Buffer.from(nonce.padEnd(16, 'x')).toString('base64') },
      timeout: 10000,
    });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve({ status: res.statusCode, body: '' }); });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body: body.trim() }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${u.host}`)));
    req.on('error', reject);
    req.end();
  });
}

// How many times the page logged that one of its sockets closed with 4401 (app.js logs each).
const expiries = (watch, socket, from = 0) =>
  watch.console.slice(from).filter((t) => t.includes(`${socket} socket closed 4401`)).length;

const lastToken = (watch) => watch.tokens[watch.tokens.length - 1];

// ------------------------------------------------------------------ the run

async function main() {
  mkdirSync(LOGDIR, { recursive: true });
  // launch() gives the browser a fresh temporary profile (user-data dir), removed on close.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  note(`chromium ${browser.version()}, room ${ROOM}, users ${USER_A} and ${USER_B}`);
  try {
    await run(browser);
  } finally {
    await browser.close();
  }
}

async function run(browser) {
  // Two contexts: two users with their own localStorage. B is a narrow (phone-sized) window.
  const ctxA = await browser.newContext({ viewport: { width: 1000, height: 720 } });
  const ctxB = await browser.newContext({ viewport: { width: 380, height: 720 } });
  const a = await ctxA.newPage();
  const b = await ctxB.newPage();
  const watchA = watchPage(a, 'a'), watchB = watchPage(b, 'b');

  // Frames A sends to the producer, to see what a retry sends, and the producer's answers; the
  // URLs of A's consumer sockets.
  const sentByA = [], answersToA = [], eventsUrlsA = [];
  a.on('websocket', (ws) => {
    if (ws.url().startsWith(EVENTS_URL)) { eventsUrlsA.push(ws.url()); return; }
    ws.on('framesent', (f) => { try { sentByA.push(JSON.parse(f.payload)); } catch (e) { /* not ours */ } });
    ws.on('framereceived', (f) => { try { answersToA.push(JSON.parse(f.payload)); } catch (e) { /* not ours */ } });
  });

  const up = await check(`page loads from the producer, ${USER_A} joins room ${ROOM} and both sockets connect`, async () => {
    await joinRoom(a, USER_A);
    await recordStatuses(a);
  });
  if (!up) return;
  await check(`a second user ${USER_B} joins the same room in a narrow window`, () => joinRoom(b, USER_B));

  await check('presence: each page lists both users online', async () => {
    await a.locator('#online li', { hasText: USER_B }).waitFor({ timeout: WAIT });
    await b.locator('#online li', { hasText: USER_A }).waitFor({ timeout: WAIT });
    await a.locator('#online li', { hasText: `${USER_A} (you)` }).waitFor({ timeout: WAIT });
  });

  // ---- identity: each page logged in through /dev/token, and is its token's user everywhere
  let tokA = null, tokB = null;
  await check('each page logged in through /dev/token (one userId per name) and presence lists each user under the userId of their token', async () => {
    await until(() => lastToken(watchA) && lastToken(watchB),
      () => `token answers: A ${watchA.tokens.length}, B ${watchB.tokens.length}`);
    tokA = lastToken(watchA);
    tokB = lastToken(watchB);
    assert(tokA.username === USER_A && tokB.username === USER_B, `usernames ${tokA.username}, ${tokB.username}`);
    assert(/^[1-9][0-9]*$/.test(tokA.userId) && tokA.userId !== tokB.userId, `userIds ${tokA.userId}, ${tokB.userId}`);
    for (const [page, tok, name] of [[a, tokB, USER_B], [b, tokA, USER_A], [a, tokA, USER_A], [b, tokB, USER_B]]) {
      await page.locator(`#online li[data-user-id="${tok.userId}"]`, { hasText: name }).waitFor({ timeout: WAIT });
    }
    const url = eventsUrlsA[eventsUrlsA.length - 1] || '';
    const q = new URL(url).searchParams;
    assert(q.get('userId') === tokA.userId && q.get('access_token') === tokA.token,
      `A's events URL does not carry A's token and userId: userId=${q.get('userId')}`);
  });

  // ---- without a token nothing gets in
  await check('without a token the room API answers 401 and both services refuse the WebSocket handshake with 401', async () => {
    const res = await fetch(`${API_URL}/api/rooms/${ROOM}/messages?limit=1`);
    const why = (await res.text()).trim();
    assert(res.status === 401, `room API without a token: ${res.status} ${why}`);
    assert(why && !why.includes('\n'), `the 401 reason is not one line: ${JSON.stringify(why)}`);
    const withToken = await fetch(`${API_URL}/api/rooms/${ROOM}/messages?limit=1`,
      { headers: { Authorization: `Bearer ${tokA.token}` } });
    assert(withToken.status === 200, `room API with A's token: ${withToken.status}`);
    const p = await handshakeStatus(`${PAGE_URL.replace(/^http/, 'ws').replace(/\/+$/, '')}/chat/${ROOM}`);
    assert(p.status === 401, `producer handshake without a token: ${p.status} ${p.body}`);
    const c = await handshakeStatus(`${EVENTS_URL}/chat/${ROOM}?userId=${tokA.userId}&username=${USER_A}`);
    assert(c.status === 401, `consumer handshake without a token: ${c.status} ${c.body}`);
  });
  await check("a token used with another user's userId is refused (403), a bad name gets no token (400)", async () => {
    const c = await handshakeStatus(`${EVENTS_URL}/chat/${ROOM}?userId=${tokB.userId}&username=${USER_B}&access_token=${tokA.token}`);
    assert(c.status === 403, `consumer handshake with A's token as B: ${c.status} ${c.body}`);
    const res = await fetch(new URL('/dev/token?name=no%20such!', PAGE_URL));
    assert(res.status === 400, `/dev/token with a bad name: ${res.status}`);
  });
  await check('the consumer answers the page\'s CORS preflight for an Authorization header', async () => {
    const origin = new URL(PAGE_URL).origin;
    const res = await fetch(`${API_URL}/api/rooms/${ROOM}/messages?limit=1`, { method: 'OPTIONS',
      headers: { Origin: origin, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'authorization' } });
    const allowHeaders = res.headers.get('access-control-allow-headers') || '';
    assert(res.status >= 200 && res.status < 300, `preflight status ${res.status}`);
    assert(/(^|[\s,])authorization([\s,]|$)/i.test(allowHeaders), `Access-Control-Allow-Headers "${allowHeaders}"`);
    assert(res.headers.get('access-control-allow-origin') === origin,
      `Access-Control-Allow-Origin "${res.headers.get('access-control-allow-origin')}"`);
  });

  await check(`typing by ${USER_A} shows on ${USER_B}'s page`, async () => {
    await a.locator('#text').pressSequentially('hel');
    await b.locator('#typing', { hasText: `${USER_A} is typing` }).waitFor({ timeout: WAIT });
  });
  await check('... and disappears after a few seconds without typing', async () => {
    await b.locator('#typing').waitFor({ state: 'hidden', timeout: WAIT });
  });

  // ---- a message from A to B, with its receipts
  const m1 = `hello from ${USER_A} ${nonce}`;
  let cid1 = null;
  await check(`${USER_A} sends; ${USER_B} sees the message once`, async () => {
    cid1 = await send(a, m1);
    await messagesWithText(b, m1).first().waitFor({ timeout: WAIT });
    await assertShownOnce(b, [m1]);
  });
  await check(`${USER_A}'s message goes sending -> delivered (the MESSAGE event with its clientMessageId)`, async () => {
    await waitStatus(a, m1, ['delivered', 'read']);
    const log = await statusLog(a, cid1);
    assert(log[0] === 'sending', `first status ${log[0]} (log ${log.join(' > ')})`);
    const rank = { sending: 0, sent: 1, delivered: 2, read: 3 };
    assert(log.every((s, i) => i === 0 || rank[s] > rank[log[i - 1]]), `statuses went backwards: ${log.join(' > ')}`);
    note(`statuses of the first message: ${log.join(' > ')}` +
      (log.includes('sent') ? '' : ' (the MESSAGE event came before the ack; "sent" is checked below with the consumer stopped)'));
  });
  await check(`every frame ${USER_A} sent carries the token's userId, and ${USER_B}'s page attributes the message to it`, async () => {
    const frames = sentByA.filter((f) => 'userId' in f);
    assert(frames.length > 0, 'no frame with a userId seen');
    const other = frames.filter((f) => String(f.userId) !== tokA.userId);
    assert(other.length === 0, `frames with userId ${other.map((f) => f.userId).join(',')}`);
    const shownAs = await messagesWithText(b, m1).getAttribute('data-user-id');
    assert(shownAs === tokA.userId, `B shows the message as userId ${shownAs}`);
  });
  await check(`${USER_B}'s READ reaches ${USER_A}: the message shows "read by 1"`, async () => {
    await waitStatus(a, m1, ['read']);
    const text = await ownMessage(a, m1).locator('.status-text').textContent();
    assert(text === 'read by 1', `status text "${text}"`);
  });

  // ---- an invalid message: the producer's error is shown on it, and retry reuses its id
  const long = 'x'.repeat(501);
  await check('a 501-character message shows the producer\'s VALIDATION_ERROR on it, with a retry', async () => {
    await a.locator('#text').fill(long);
    const count = await a.locator('#text-count').textContent();
    assert(count === '501/500', `counter shows "${count}"`);
    await a.locator('#text').press('Enter');
    await waitStatus(a, long, ['error']);
    const text = await ownMessage(a, long).locator('.status-text').textContent();
    assert(/VALIDATION_ERROR/.test(text) && /message/.test(text), `status text "${text}"`);
    await ownMessage(a, long).getByRole('button', { name: 'Retry' }).waitFor({ timeout: WAIT });
  });
  await check('Retry sends the same clientMessageId again and shows the error again', async () => {
    const cid = await ownMessage(a, long).getAttribute('data-client-message-id');
    const before = sentByA.filter((f) => f.clientMessageId === cid).length;
    await ownMessage(a, long).getByRole('button', { name: 'Retry' }).click();
    const until = Date.now() + WAIT;
    while (sentByA.filter((f) => f.clientMessageId === cid).length <= before) {
      assert(Date.now() < until, 'no second frame with that clientMessageId');
      await sleep(50);
    }
    await waitStatus(a, long, ['error']);
    assert(sentByA.filter((f) => f.clientMessageId === cid).every((f) => f.message === long), 'retry changed the frame');
  });

  // ---- history: B reloads and sees the earlier messages exactly once
  const m2 = `second ${nonce}`, m3 = `third ${nonce}`;
  for (const t of [m2, m3]) await send(a, t).catch(() => {});
  await waitShown(b, [m2, m3]).catch(() => {});
  await screenshot(a, 'a-after-messages');
  await screenshot(b, 'b-after-messages');

  // From here B's consumer socket goes through a Playwright route that forwards everything to
  // the real consumer, so the test can cut it later (as a network drop would) while A sends.
  const route = { blocked: false, current: null, urls: [] };
  await b.routeWebSocket((u) => u.href.startsWith(`${EVENTS_URL}/chat/`), (ws) => {
    route.urls.push(ws.url());
    if (route.blocked) { ws.close({ code: 4000, reason: 'test: network cut' }).catch(() => {}); return; }
    route.current = ws;
    ws.connectToServer();
  });

  const m4 = `after reload ${nonce}`;
  await check(`after a reload ${USER_B} sees the earlier messages from history, each exactly once`, async () => {
    await b.reload();
    await waitConnected(b);
    await waitShown(b, [m1, m2, m3]);
    // A live message after the subscription started: had since= overlapped the history, a
    // replayed duplicate would have arrived before it.
    await send(a, m4);
    await waitShown(b, [m4]);
    await assertShownOnce(b, [m1, m2, m3, m4]);
    assert(await messagesWithText(b, long).count() === 0, 'the refused message is shown to B');
    const url = route.urls[route.urls.length - 1] || '';
    assert(/[?&]since=\d+/.test(url), `B subscribed without since: ${url}`);
  });

  // ---- search: B finds the stored messages by a word in them (the consumer's search API)
  await check(`${USER_B} searches the room for "${nonce}" and finds the 4 messages that contain it (stored in PostgreSQL)`, async () => {
    const results = b.locator('#search-list li .text');
    // Search reads PostgreSQL: the last message may still be on its way to a commit.
    const end = Date.now() + WAIT;
    for (;;) {
      await b.fill('#search-q', nonce);
      await b.click('#search-button');
      await b.waitForFunction(() => !/Searching/.test(document.getElementById('search-note').textContent));
      const n = await results.count();
      if (n === 4) break;
      if (Date.now() > end) throw new Error(`${n} search results, not 4: ${await b.textContent('#search-note')}`);
      await sleep(250);
    }
    const texts = await results.allTextContents();
    for (const t of [m1, m2, m3, m4]) assert(texts.includes(t), `"${t}" not among the results: ${texts.join(' | ')}`);
    const noteText = await b.textContent('#search-note');
    assert(/^4 found/.test(noteText), `note "${noteText}"`);
  });
  await check('a 2-character search asks for 3; a word nobody wrote finds nothing; Close hides the results', async () => {
    await b.fill('#search-q', 'ab');
    await b.click('#search-button');
    await b.waitForFunction(() => /at least 3/.test(document.getElementById('search-note').textContent));
    await b.fill('#search-q', `nothing-${nonce}`);
    await b.click('#search-button');
    await b.waitForFunction(() => /^Nothing found/.test(document.getElementById('search-note').textContent));
    assert(await b.locator('#search-list li').count() === 0, 'results shown for a word nobody wrote');
    await b.click('#search-close');
    assert(await b.locator('#search-results').isHidden(), 'the results stay open after Close');
  });

  // ---- B's events socket is cut while A sends; B resumes with since and misses nothing
  const gap = [`during the cut 1 ${nonce}`, `during the cut 2 ${nonce}`, `during the cut 3 ${nonce}`];
  await check(`${USER_B}'s events socket is cut while ${USER_A} sends 3 messages; after reconnecting with since= B shows them exactly once`, async () => {
    const seqBefore = await b.$$eval('#messages li[data-seq]', (ls) => ls[ls.length - 1].dataset.seq);
    route.blocked = true;
    const n = route.urls.length;
    await route.current.close({ code: 4000, reason: 'test: network cut' });
    await b.waitForSelector('#conn:not([data-consumer="open"])', { timeout: WAIT });
    for (const t of gap) await send(a, t);
    for (const t of gap) await waitStatus(a, t, ['delivered', 'read']);
    assert(await messagesWithText(b, gap[0]).count() === 0, 'B got a message while cut off');
    route.blocked = false;
    await waitShown(b, gap, 30000); // the backoff may be a few seconds by now
    await waitConnected(b);
    await assertShownOnce(b, [m1, m2, m3, m4, ...gap]);
    const resumed = route.urls.slice(n).filter((u) => /[?&]since=/.test(u));
    assert(resumed.length > 0 && resumed.every((u) => u.includes(`since=${seqBefore}`)),
      `reconnects did not resume from ${seqBefore}: ${route.urls.slice(n).join(' ')}`);
    note(`B reconnected ${route.urls.length - n} times, resuming with since=${seqBefore}`);
  });

  // ---- the consumer process is stopped and started again
  const down = [`consumer down 1 ${nonce}`, `consumer down 2 ${nonce}`];
  let stopped = false;
  await check('consumer stopped (SIGTERM): both pages show the events connection lost', async () => {
    await askShell('stop-consumer', 'consumer-stopped', 60000);
    stopped = true;
    await a.waitForSelector('#conn:not([data-consumer="open"])', { timeout: WAIT });
    await b.waitForSelector('#conn:not([data-consumer="open"])', { timeout: WAIT });
  });
  await check('messages sent meanwhile are acked by the producer and stay "sent" (durable in SQS, not yet delivered)', async () => {
    for (const t of down) await send(a, t);
    for (const t of down) await waitStatus(a, t, ['sent']);
    for (const t of down) {
      const log = await statusLog(a, await ownMessage(a, t).getAttribute('data-client-message-id'));
      assert(log.join('>') === 'sending>sent', `statuses ${log.join(' > ')}`);
    }
  });
  await check('consumer restarted: both pages reconnect, the messages appear exactly once on B and become delivered on A', async () => {
    if (stopped) await askShell('start-consumer', 'consumer-started', 60000);
    await waitConnected(a, 40000);
    await waitConnected(b, 40000);
    await waitShown(b, down, 30000);
    for (const t of down) await waitStatus(a, t, ['delivered', 'read'], 30000);
    await assertShownOnce(b, [m1, m2, m3, m4, ...gap, ...down]);
    await assertShownOnce(a, [m1, m2, m3, m4, ...gap, ...down]);
    for (const t of down) {
      const log = await statusLog(a, await ownMessage(a, t).getAttribute('data-client-message-id'));
      // "read" may come straight after "sent": the consumer tells a reconnecting member the
      // positions read while it was away (a READ already covering the message) before its replay
      // delivers the message, and a read message is shown as read, which implies delivered.
      const third = log.slice(0, 3).join('>');
      assert(third === 'sending>sent>delivered' || third === 'sending>sent>read', `statuses ${log.join(' > ')}`);
    }
  });
  await check('presence is back after the restart: each page lists the other user', async () => {
    await a.locator('#online li', { hasText: USER_B }).waitFor({ timeout: WAIT });
    await b.locator('#online li', { hasText: USER_A }).waitFor({ timeout: WAIT });
  });
  await check(`${USER_B}'s READ after the restart reaches ${USER_A}: the newest message shows "read by 1"`, async () => {
    await waitStatus(a, down[down.length - 1], ['read']);
  });

  // ---- more than one page of history: "Load older messages" pages back with before=
  const bulk = Array.from({ length: 50 }, (_, i) => `bulk ${i + 1} ${nonce}`);
  await check('with more than 50 messages a reload shows the newest 50 and "Load older messages" brings the rest, each once', async () => {
    for (const t of bulk) await send(a, t);
    for (const t of bulk) await waitStatus(a, t, ['delivered', 'read'], 30000);
    await b.reload();
    await waitConnected(b);
    await waitShown(b, bulk);
    assert(await messagesWithText(b, m1).count() === 0, 'the oldest message is shown before loading older ones');
    const older = b.getByRole('button', { name: 'Load older messages' });
    await older.click();
    await waitShown(b, [m1]);
    await assertShownOnce(b, [m1, m2, m3, m4, ...gap, ...down, ...bulk]);
    await older.waitFor({ state: 'hidden', timeout: WAIT });
  });

  await screenshot(a, 'a-final');
  await screenshot(b, 'b-final');

  // ---- a room named by a string id: any 1-64 of [A-Za-z0-9_-] is a room
  const SLUG = `team-alpha-${nonce}`;
  await check('the join form refuses "team alpha" (not a room id) and says what a room id is', async () => {
    await leaveRoom(a);
    await submitJoin(a, USER_A, 'team alpha');
    const err = await a.locator('#join-error').textContent();
    assert(/1–64 letters, digits, _ or -/.test(err), `join error "${err}"`);
    assert(await a.locator('#chat').isHidden(), 'the chat view was opened');
  });
  const s1 = `in the string room ${nonce}`;
  await check(`both users join room ${SLUG}: a message appears once on ${USER_B}'s page, the ack names the room, and it goes delivered -> read by 1`, async () => {
    await submitJoin(a, USER_A, SLUG);
    await waitConnected(a);
    await leaveRoom(b);
    await submitJoin(b, USER_B, SLUG);
    await waitConnected(b);
    const title = await b.locator('#room-title').textContent();
    assert(title === `Room ${SLUG}`, `room title "${title}"`);
    await b.locator('#online li', { hasText: USER_A }).waitFor({ timeout: WAIT });
    const cid = await send(a, s1);
    await waitShown(b, [s1]);
    await assertShownOnce(b, [s1]);
    assert(await messagesWithText(b, m1).count() === 0, `a message of room ${ROOM} is shown in ${SLUG}`);
    const ack = answersToA.find((f) => f.clientMessageId === cid && f.status === 'SUCCESS');
    assert(ack && ack.roomId === SLUG, `ack ${JSON.stringify(ack)}`);
    await waitStatus(a, s1, ['read']);
  });
  await check(`after a reload ${USER_B} is back in ${SLUG} (the link keeps the room) and its history shows the message once`, async () => {
    assert(new URL(b.url()).hash.includes(`room=${SLUG}`), `B's URL ${b.url()}`);
    await b.reload();
    await waitConnected(b);
    await waitShown(b, [s1]);
    await assertShownOnce(b, [s1]);
    const url = route.urls[route.urls.length - 1] || '';
    assert(url.startsWith(`${EVENTS_URL}/chat/${SLUG}?`), `B subscribed to ${url}`);
  });
  await screenshot(a, 'a-string-room');
  await screenshot(b, 'b-string-room');

  await expiryPhase(a, b, watchA, watchB, eventsUrlsA);

  await check('no script errors on either page, and nothing loaded from outside 127.0.0.1', async () => {
    const errs = [...watchA.errors, ...watchB.errors];
    assert(errs.length === 0, `page errors: ${errs.join(' | ')}`);
    const outside = [...watchA.outside, ...watchB.outside];
    assert(outside.length === 0, `requests to: ${outside.join(' ')}`);
  });
}

// ---- tokens that expire every few seconds: the producer is restarted to hand out short ones,
// both users log in again, and B keeps sending numbered messages across several expiries; A must
// show each one exactly once, in order, and both pages must have reconnected on 4401.
async function expiryPhase(a, b, watchA, watchB, eventsUrlsA) {
  const ROOM_X = `expiry-${nonce}`;
  const restarted = await check(`producer restarted with CHATFLOW_DEV_TOKEN_TTL_S=${SHORT_TTL_S}: /dev/token hands out ${SHORT_TTL_S} s tokens, uncacheable`, async () => {
    await askShell('restart-producer', 'producer-restarted', 90000, String(SHORT_TTL_S));
    const res = await fetch(new URL(`/dev/token?name=${USER_A}`, PAGE_URL));
    const t = await res.json();
    assert(res.status === 200 && t.ttlSeconds === SHORT_TTL_S, `status ${res.status}, ttlSeconds ${t.ttlSeconds}`);
    assert(t.expiresAt - Math.floor(Date.now() / 1000) <= SHORT_TTL_S + 1, `expiresAt ${t.expiresAt}`);
    assert(/no-store/.test(res.headers.get('cache-control') || ''), `Cache-Control "${res.headers.get('cache-control')}"`);
  });
  if (!restarted) return;
  const fromA = watchA.console.length, fromB = watchB.console.length, urlsFrom = eventsUrlsA.length;
  await check(`both users log in again and join room ${ROOM_X}`, async () => {
    for (const [page, name] of [[a, USER_A], [b, USER_B]]) {
      await leaveRoom(page);
      await submitJoin(page, name, ROOM_X);
      await waitConnected(page, 40000);
      const watch = page === a ? watchA : watchB;
      await until(() => (lastToken(watch) || {}).ttlSeconds === SHORT_TTL_S,
        () => `${name}'s newest token: ${JSON.stringify(lastToken(watch) || {}).slice(0, 80)}`);
    }
    await a.locator('#online li', { hasText: USER_B }).waitFor({ timeout: WAIT });
  });

  // B sends one numbered message every 300 ms (pacing, not a measurement) until each socket of
  // both pages has been closed with 4401 at least twice, then two more after the last expiry.
  const ticks = [];
  const expired = () => Math.min(expiries(watchA, 'consumer', fromA), expiries(watchA, 'producer', fromA),
    expiries(watchB, 'consumer', fromB), expiries(watchB, 'producer', fromB));
  const counts = () => `A consumer ${expiries(watchA, 'consumer', fromA)}, A producer ${expiries(watchA, 'producer', fromA)}, ` +
    `B consumer ${expiries(watchB, 'consumer', fromB)}, B producer ${expiries(watchB, 'producer', fromB)}`;
  await check(`${USER_B} sends numbered messages while the tokens expire: every socket of both pages closed with 4401 at least twice and reconnected with a fresh token`, async () => {
    const until = Date.now() + Math.max(90000, SHORT_TTL_S * 1000 * 8);
    for (let extra = 0; extra < 3;) {
      assert(Date.now() < until, `expiries seen after ${ticks.length} messages: ${counts()}`);
      const t = `tick ${ticks.length + 1} ${nonce}`;
      ticks.push(t);
      await send(b, t);
      await sleep(300);
      if (expired() >= 2) extra++;
    }
    await waitConnected(a, 40000);
    await waitConnected(b, 40000);
    note(`${ticks.length} messages across the expiries; 4401 closes: ${counts()}`);
  });
  await check(`${USER_A}'s page shows each of ${USER_B}'s numbered messages exactly once, in order, nothing else; all delivered on B`, async () => {
    await waitShown(a, ticks, 40000);
    for (const t of ticks) await waitStatus(b, t, ['delivered', 'read'], 40000);
    await assertShownOnce(a, ticks);
    const shown = await a.$$eval('#messages li p.text', (ps) => ps.map((p) => p.textContent));
    assert(shown.length === ticks.length, `A shows ${shown.length} messages for ${ticks.length} sent`);
    await assertShownOnce(b, ticks);
  });
  await check(`after each expiry ${USER_A}'s events socket resumed with since= and a new token`, async () => {
    const urls = eventsUrlsA.slice(urlsFrom).map((u) => new URL(u).searchParams);
    const tokens = new Set(urls.map((q) => q.get('access_token')));
    assert(urls.every((q) => q.has('since')), 'a subscription without since=');
    assert(tokens.size >= 3, `${urls.length} subscriptions with ${tokens.size} distinct tokens`);
    const seqs = urls.map((q) => BigInt(q.get('since')));
    assert(seqs.every((v, i) => i === 0 || v >= seqs[i - 1]), `since went backwards: ${seqs.join(',')}`);
  });
  await screenshot(a, 'a-expiry');
  await screenshot(b, 'b-expiry');
}

const timer = setTimeout(() => {
  notOk(`the browser test finished within ${DEADLINE_MS / 1000}s`);
  process.exit(1);
}, DEADLINE_MS);
main().then(
  () => { clearTimeout(timer); process.exit(failed ? 1 : 0); },
  (e) => { clearTimeout(timer); notOk('the browser test ran to the end', e); process.exit(1); },
);
