// ChatFlow chat page: plain JavaScript, no framework, no build step.
//
// Two sockets per room (docs/protocol.md):
//   producer  ws(s)://<page host>/chat/{room}        we send chat messages and TYPING here; each
//                                                     message gets one ack or one error frame
//   consumer  <eventsUrl>/chat/{room}?userId&username[&since]
//                                                     MESSAGE, PRESENCE, TYPING, READ and ERROR
//                                                     events arrive here; we send READ frames
// and one HTTP API on the consumer (<apiUrl>/api/rooms/{room}/messages) for history.
//
// Identity (docs/protocol.md §8): when /config.json says auth is required, every socket carries
// the user's identity token as ?access_token= and every API request as "Authorization: Bearer";
// the token's userId is the one every frame carries. A token expiring closes both sockets with
// 4401: the page gets a fresh one and reconnects as after any drop (resend unacked messages,
// resume with since=), so the expiry costs no message.
//
// Ordering and exactly-once display: history is loaded first, then the consumer socket is opened
// with since=<newest sequence number shown>, and every reconnect resumes from the newest one
// received. Messages are deduplicated by messageId and by sequenceNumber, so a replay that overlaps
// what is on screen never shows anything twice.
'use strict';

(function () {
  const DEFAULT_CONFIG = {
    eventsUrl: '',
    apiUrl: '',
    limits: { maxFrameBytes: 4096, maxMessageChars: 500, messagesPerMinute: 60, typingIntervalMs: 2000 },
    auth: { required: false, devTokens: false, tokenUrl: '', userIdClaim: 'sub' },
  };
  const HISTORY_PAGE = 50;
  const TYPING_SHOWN_MS = 4000;      // a TYPING event is shown this long unless renewed
  const ACK_TIMEOUT_MS = 15000;      // the producer answers within its publish deadline (5 s)
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const STABLE_AFTER_MS = 3000;      // a socket open this long resets its backoff
  const READ_DEBOUNCE_MS = 300;      // one READ per burst of messages, not one per message
  const USERNAME_RE = /^[A-Za-z0-9]{3,20}$/;
  // A room id (docs/protocol.md §1): any such string is a room, compared as it is written
  // ("07" and "7" are two rooms), so it is never turned into a number.
  const ROOM_RE = /^[A-Za-z0-9_-]{1,64}$/;
  const SEQ_RE = /^[0-9]{1,60}$/;
  const USER_ID_RE = /^[1-9][0-9]{0,5}$/; // 1-100000 once compared with the upper bound
  const CLOSE_TOKEN_EXPIRED = 4401;
  const PROVIDER_TOKEN_KEY = 'chatflow:idToken'; // sessionStorage: this tab's login, not shared
  const SESSION_EXPIRED = 'Session expired — log in again';

  const $ = (id) => document.getElementById(id);
  const el = {
    conn: $('conn'), connText: $('conn-text'),
    join: $('join'), joinForm: $('join-form'), username: $('username'), room: $('room'),
    joinError: $('join-error'), joinButton: $('join-button'), loginNote: $('login-note'),
    chat: $('chat'), roomTitle: $('room-title'), me: $('me'), leave: $('leave'),
    loadOlder: $('load-older'), historyNote: $('history-note'), messages: $('messages'),
    typing: $('typing'), online: $('online'), onlineCount: $('online-count'),
    composer: $('composer'), text: $('text'), textCount: $('text-count'),
    searchForm: $('search-form'), searchQ: $('search-q'), searchResults: $('search-results'),
    searchNote: $('search-note'), searchList: $('search-list'), searchMore: $('search-more'),
    searchClose: $('search-close'),
  };

  let config = DEFAULT_CONFIG;
  let session = null; // everything about the room we are in; null on the join form

  // ------------------------------------------------------------------ small helpers

  // Sequence numbers are decimal strings that can exceed 2^64 (SQS FIFO), so compare as BigInt.
  function seqCmp(a, b) {
    const x = BigInt(a), y = BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  const isSeq = (s) => typeof s === 'string' && SEQ_RE.test(s);
  // Map key of a sequence number: the same number may come zero-padded (SQS's 20-digit form) or
  // not, depending on where it was read from; the key must not care.
  const seqKey = (s) => BigInt(s).toString();
  const codePoints = (s) => Array.from(s).length;
  const utf8Bytes = (s) => new TextEncoder().encode(s).length;

  function randomToken(len) {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    const bytes = crypto.getRandomValues(new Uint8Array(len));
    return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
  }

  function formatTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  // Base URLs of the consumer: "" in config.json means the page's host on the default ports.
  function eventsBase() {
    if (config.eventsUrl) return config.eventsUrl.replace(/\/+$/, '');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.hostname}:8081`;
  }
  function apiBase() {
    if (config.apiUrl) return config.apiUrl.replace(/\/+$/, '');
    return `${location.protocol}//${location.hostname}:9091`;
  }
  function producerUrl(room) {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/chat/${encodeURIComponent(room)}`;
  }

  const isUserId = (v) => USER_ID_RE.test(String(v)) && Number(v) <= 100000;

  // One userId (1-100000) per user name, kept in localStorage so a reload is the same user.
  function userIdFor(username) {
    const key = `chatflow:userId:${username}`;
    try {
      const kept = localStorage.getItem(key);
      if (isUserId(kept)) return kept;
    } catch (e) { /* storage disabled: a fresh id for this visit */ }
    const id = String(1 + (crypto.getRandomValues(new Uint32Array(1))[0] % 100000));
    try { localStorage.setItem(key, id); } catch (e) { /* see above */ }
    return id;
  }

  // ------------------------------------------------------------------ identity (protocol.md §8)
  //
  // With auth off the page is its own identity: a userId kept per user name (userIdFor). With auth
  // on the token is the identity, from one of two places:
  //   devTokens  <tokenUrl>?name=<user name> on the producer (development only: no password), asked
  //              again whenever the services say the token ran out (4401) or refused it;
  //   otherwise  an identity provider's hosted login, which redirects back to the page with
  //              #id_token=… or #access_token=…; the page cannot renew it, so its expiry ends the
  //              session ("log in again").

  // No token can be had without the user doing something: shown to them, never retried.
  class AuthError extends Error {}

  // The payload of a JWT, or null. Not verified: the services verify; the page only reads who the
  // token says the user is, to put the same userId in its frames.
  function jwtClaims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === 'object' ? claims : null;
    } catch (e) {
      return null;
    }
  }

  let providerToken = null; // the provider's token when sessionStorage is disabled

  // An identity provider's redirect puts the token in the fragment: take it out of the address bar
  // at once (a copied link must not carry it) and keep it for this tab only.
  function takeTokenFromHash() {
    const h = new URLSearchParams(location.hash.replace(/^#/, ''));
    const token = h.get('id_token') || h.get('access_token');
    if (!token) return;
    for (const k of ['id_token', 'access_token', 'token_type', 'expires_in', 'scope', 'state']) h.delete(k);
    const rest = h.toString();
    history.replaceState(null, '', rest ? `#${rest}` : location.pathname);
    try { sessionStorage.setItem(PROVIDER_TOKEN_KEY, token); } catch (e) { /* storage disabled */ }
    providerToken = token;
  }

  function storedProviderToken() {
    try { return sessionStorage.getItem(PROVIDER_TOKEN_KEY) || providerToken; } catch (e) { return providerToken; }
  }
  function forgetProviderToken() {
    providerToken = null;
    try { sessionStorage.removeItem(PROVIDER_TOKEN_KEY); } catch (e) { /* storage disabled */ }
  }

  // Who the identity provider's token says the user is (the userId from the claim config.json
  // names, as the services read it); the form's name only when the token names none.
  function providerIdentity(formName) {
    const token = storedProviderToken();
    const c = token ? jwtClaims(token) : null;
    const claim = config.auth.userIdClaim;
    if (!c) throw new AuthError('This server needs a login: sign in with your identity provider first.');
    if (!isUserId(c[claim])) throw new AuthError(`The login token does not name a ChatFlow user (its ${claim} is not a userId).`);
    if (typeof c.exp === 'number' && c.exp * 1000 <= Date.now()) {
      forgetProviderToken();
      throw new AuthError(SESSION_EXPIRED);
    }
    const name = [c.name, c.preferred_username].find((n) => USERNAME_RE.test(n || '')) || formName;
    return { token, userId: String(c[claim]), username: name, expiresAt: Number(c.exp) || 0, renewable: false };
  }

  // A development token for this name. The answer's reason (400: a bad name) is one line, safe to
  // show; a network failure is not an AuthError (the producer may be restarting: try again).
  async function fetchDevToken(name) {
    const url = new URL(config.auth.tokenUrl || '/dev/token', location.href);
    url.searchParams.set('name', name);
    const res = await fetch(url, { cache: 'no-store' });
    const body = await res.text();
    if (res.status === 404) throw new AuthError('Development logins are off on this server.');
    if (!res.ok) throw new AuthError(body.trim() || `the login failed (HTTP ${res.status})`);
    const t = JSON.parse(body);
    if (typeof t.token !== 'string' || !isUserId(t.userId)) throw new Error('the login answer is malformed');
    return { token: t.token, userId: String(t.userId), username: t.username || name,
      expiresAt: Number(t.expiresAt) || 0, renewable: true };
  }

  // The identity to join as: {userId, username, token, expiresAt, renewable}; token null with auth
  // off. Throws an AuthError the join form shows.
  async function obtainIdentity(formName) {
    if (!config.auth.required) return { userId: userIdFor(formName), username: formName, token: null };
    if (config.auth.devTokens) return fetchDevToken(formName);
    return providerIdentity(formName);
  }

  // The token for the next connection or request (null with auth off). A renewable one is fetched
  // again once dropped or past its expiry by our clock; both sockets, closed by the same expiry,
  // share one fetch.
  function currentToken(s) {
    const a = s.auth;
    if (!a) return Promise.resolve(null);
    if (a.token && !(a.expiresAt && a.expiresAt * 1000 <= Date.now())) return Promise.resolve(a.token);
    if (!a.renewable) return Promise.reject(new AuthError(SESSION_EXPIRED));
    if (!a.pending) {
      a.pending = fetchDevToken(s.username).then((t) => {
        a.pending = null;
        // Same name, same userId: frames already written (the outbox) carry it.
        if (t.userId !== s.userId) throw new AuthError(`The login now names user ${t.userId}, not ${s.userId}: join again.`);
        Object.assign(a, { token: t.token, expiresAt: t.expiresAt });
        return t.token;
      }, (e) => { a.pending = null; throw e; });
    }
    return a.pending;
  }

  // The services said this token is no good (expired, refused): the next currentToken() gets a new
  // one. Only the token that was refused: the other socket may already have renewed it.
  function dropToken(s, token) {
    if (s.auth && token && s.auth.token === token) s.auth.token = null;
  }

  const bearer = (token) => (token ? { Authorization: `Bearer ${token}` } : {});

  // A socket's URL with the token as access_token (browsers cannot set a header on a WebSocket);
  // remembers which token each socket used, for dropToken after its close.
  async function withToken(s, name, makeUrl) {
    const token = await currentToken(s);
    s.tokenUsed[name] = token;
    const url = makeUrl();
    return token ? `${url}${url.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(token)}` : url;
  }

  // GET on the consumer's room API with the token. A 401 there (the token ran out by the server's
  // clock before ours) gets one fresh token and one more try.
  async function apiGet(s, url) {
    let token = await currentToken(s);
    let res = await fetch(url, { headers: bearer(token) });
    if (res.status === 401 && s.auth && s.auth.renewable) {
      dropToken(s, token);
      token = await currentToken(s);
      res = await fetch(url, { headers: bearer(token) });
    }
    return res;
  }

  // ------------------------------------------------------------------ reconnecting socket

  // A WebSocket that reconnects with exponential backoff and jitter. url() is called for every
  // attempt, so the consumer socket can resume with the newest sequence number seen by then; it may
  // return a promise (a fresh token first) and may fail (handlers.onNoUrl; the backoff goes on).
  // handlers.onClose(code, reason, opened) returns 'now' to reconnect at once: a token that ran
  // out is no trouble of the server's, so it is no reason to wait.
  function reconnectingSocket(name, url, handlers) {
    let ws = null, attempt = 0, retryTimer = null, stableTimer = null, stopped = false;

    async function connect() {
      retryTimer = null;
      if (stopped) return;
      handlers.onState('connecting');
      let target;
      try {
        target = await url();
      } catch (e) {
        if (stopped) return;
        handlers.onNoUrl(e);
        if (!stopped) scheduleRetry(false);
        return;
      }
      if (stopped) return;
      let opened = false;
      ws = new WebSocket(target);
      ws.onopen = () => {
        opened = true;
        handlers.onState('open');
        // Only a connection that stays up resets the backoff: a server that accepts and closes
        // at once (replay incomplete, room full) must not be hammered every 0.5 s.
        stableTimer = setTimeout(() => { attempt = 0; }, STABLE_AFTER_MS);
        handlers.onOpen();
      };
      ws.onmessage = (e) => { if (typeof e.data === 'string') handlers.onMessage(e.data); };
      ws.onclose = (e) => {
        clearTimeout(stableTimer);
        ws = null;
        if (stopped) return;
        const next = handlers.onClose(e.code, e.reason, opened);
        if (!stopped) scheduleRetry(next === 'now');
      };
      // onerror is always followed by onclose, which does the work.
    }

    function scheduleRetry(now) {
      if (now) {
        handlers.onState('waiting', 0);
        retryTimer = setTimeout(connect, 0);
        return;
      }
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
      attempt += 1;
      // "Equal jitter": between half and all of the ceiling, so many clients dropped at once by
      // a restarting server do not all come back in the same millisecond.
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      handlers.onState('waiting', delay);
      retryTimer = setTimeout(connect, delay);
    }

    connect();
    return {
      name,
      isOpen: () => ws !== null && ws.readyState === WebSocket.OPEN,
      send(text) {
        if (!ws || ws.readyState !== WebSocket.OPEN) return false;
        ws.send(text);
        return true;
      },
      close() {
        stopped = true;
        clearTimeout(retryTimer);
        clearTimeout(stableTimer);
        if (ws) ws.close(1000, 'leaving');
      },
    };
  }

  // ------------------------------------------------------------------ session (one room)

  // identity: what obtainIdentity() gave (with auth off, token is null and s.auth stays null).
  function newSession(identity, room) {
    return {
      username: identity.username, room, userId: identity.userId,
      auth: identity.token ? { token: identity.token, expiresAt: identity.expiresAt,
        renewable: identity.renewable, pending: null } : null,
      tokenUsed: { producer: null, consumer: null }, // the token each socket last connected with
      refusedOpens: { producer: 0, consumer: 0 },    // attempts in a row that never opened
      authProblem: '',        // set when the session cannot go on without the user (log in again)
      probing: false,
      entries: [],            // messages on screen, in display order (sequenced first, then pending)
      byMessageId: new Map(), // messageId -> entry
      byClientId: new Map(),  // clientMessageId -> own entry
      bySeq: new Map(),       // seqKey of a sequence number received from the consumer -> entry
      newestSeq: null,        // newest sequence number received from the consumer (resume point)
      nextBefore: null, hasMore: false,
      members: new Map(),     // userId -> username, from PRESENCE events
      usernames: new Map(),   // userId -> username, anyone we have heard of (read-by tooltips)
      typing: new Map(),      // userId -> {username, timer}
      readPositions: new Map(), // userId -> newest sequence number that user has read
      lastReadSent: null, readTimer: null,
      lastTypingSent: 0,
      localCounter: 0,
      producer: null, consumer: null,
      producerState: 'idle', consumerState: 'idle', consumerNote: '',
    };
  }

  // Logs in (with auth on) and joins; a failed login stays on the join form and says why.
  async function logInAndJoin(formName, room) {
    el.joinButton.disabled = true;
    el.joinError.textContent = config.auth.required ? 'Logging in…' : '';
    try {
      const identity = await obtainIdentity(formName);
      el.joinError.textContent = '';
      join(identity, room);
    } catch (e) {
      el.joinError.textContent = `Could not log in: ${e.message}`;
    } finally {
      el.joinButton.disabled = false;
    }
  }

  function join(identity, room) {
    session = newSession(identity, room);
    const s = session;
    const username = s.username;
    history.replaceState(null, '', `#room=${encodeURIComponent(room)}&username=${encodeURIComponent(username)}`);
    el.join.hidden = true;
    el.chat.hidden = false;
    el.roomTitle.textContent = `Room ${room}`;
    el.me.textContent = `as ${username}`;
    el.messages.replaceChildren();
    el.historyNote.textContent = 'Loading history…';
    renderMembers();
    renderTyping();
    el.text.focus();

    s.producer = reconnectingSocket('producer', () => withToken(s, 'producer', () => producerUrl(room)), {
      onState: (st) => { s.producerState = st; renderConn(); },
      onOpen: () => { s.refusedOpens.producer = 0; flushOutbox(s); },
      onMessage: (data) => onProducerFrame(s, data),
      onClose: (code, reason, opened) => afterClose(s, 'producer', code, opened),
      onNoUrl: (e) => noToken(s, 'producer', e),
    });

    // History first, so the subscription can start exactly after the newest message shown.
    loadInitialHistory(s).then((ok) => {
      if (session !== s || s.authProblem) return;
      if (!ok) el.historyNote.textContent = 'History is unavailable: showing new messages only.';
      subscribe(s, ok);
    });
  }

  // After a socket closed, with auth on: a 4401 gets a fresh token and an immediate reconnect; an
  // attempt that never opened may have been refused (401/403, which a browser is not told), so the
  // first one drops the token it used and the next ones ask the room API, whose answer says.
  function afterClose(s, name, code, opened) {
    if (!s.auth) return undefined;
    if (code === CLOSE_TOKEN_EXPIRED) {
      dropToken(s, s.tokenUsed[name]);
      // Logged so a test (or a developer) can see the expiry was handled, not just survived.
      console.info(`chatflow: ${name} socket closed ${code} (token expired): ` +
        (s.auth.renewable ? 'reconnecting with a fresh token' : 'the session is over'));
      if (!s.auth.renewable) { sessionOver(s, SESSION_EXPIRED); return undefined; }
      return 'now';
    }
    if (opened) return undefined;
    s.refusedOpens[name] += 1;
    if (s.refusedOpens[name] === 1 && s.auth.renewable) dropToken(s, s.tokenUsed[name]);
    else checkAuthorised(s);
    return undefined;
  }

  function noToken(s, name, e) {
    if (e instanceof AuthError) sessionOver(s, e.message);
    else console.warn(`chatflow: ${name}: no token yet (${e.message}); trying again`);
  }

  // The browser hides why a WebSocket handshake failed; the room API checks the same token for the
  // same room and its status is readable. 401/403 there: not authorised, stop. Anything else (the
  // consumer is down, say): keep reconnecting.
  async function checkAuthorised(s) {
    if (s.probing) return;
    s.probing = true;
    try {
      const res = await apiGet(s, `${roomApiUrl(s)}?${new URLSearchParams({ limit: '1', userId: s.userId })}`);
      if (res.status === 401 || res.status === 403) {
        const why = errorText(await res.text());
        sessionOver(s, `Not authorised${why ? ': ' + why : ''}`);
      }
    } catch (e) {
      if (e instanceof AuthError) sessionOver(s, e.message);
    } finally {
      s.probing = false;
    }
  }

  // The reason in an error answer: the room API's {"error": "..."}, or one line of text.
  function errorText(body) {
    try {
      const o = JSON.parse(body);
      if (o && typeof o.error === 'string') return o.error;
    } catch (e) { /* not JSON: the text itself */ }
    return body.trim().split('\n')[0];
  }

  // The session cannot go on without the user (log in again): both sockets stop, the page says why.
  function sessionOver(s, why) {
    if (session !== s || s.authProblem) return;
    s.authProblem = why;
    if (why === SESSION_EXPIRED) forgetProviderToken();
    s.producer && s.producer.close();
    s.consumer && s.consumer.close();
    s.producerState = s.consumerState = 'idle';
    el.historyNote.textContent = why;
    console.warn(`chatflow: ${why}`);
    renderConn();
  }

  function leave() {
    const s = session;
    if (!s) return;
    session = null;
    s.producer && s.producer.close();
    s.consumer && s.consumer.close();
    for (const t of s.typing.values()) clearTimeout(t.timer);
    for (const e of s.entries) clearTimeout(e.ackTimer);
    clearTimeout(s.readTimer);
    history.replaceState(null, '', location.pathname);
    closeSearch();
    el.chat.hidden = true;
    el.join.hidden = false;
    renderConn();
  }

  // ------------------------------------------------------------------ history

  const roomApiUrl = (s) => `${apiBase()}/api/rooms/${encodeURIComponent(s.room)}/messages`;

  async function fetchHistory(s, before) {
    const q = new URLSearchParams({ limit: String(HISTORY_PAGE), userId: s.userId });
    if (before) q.set('before', before);
    const res = await apiGet(s, `${roomApiUrl(s)}?${q}`);
    // Refused even with a fresh token: retrying will not help, the user must know.
    if (res.status === 401 || res.status === 403) throw new AuthError(`Not authorised: ${errorText(await res.text())}`);
    if (!res.ok) throw new Error(`history: HTTP ${res.status}`);
    return res.json();
  }

  function applyHistoryPage(s, page) {
    for (const m of page.messages || []) addMessageEvent(s, m, true);
    s.hasMore = Boolean(page.hasMore);
    s.nextBefore = isSeq(page.nextBefore) ? page.nextBefore : null;
    for (const p of page.readPositions || []) noteReadPosition(s, String(p.userId), p.sequenceNumber);
    // Our own stored position: no need to send READ again for what we read before the reload.
    if (page.readPosition && isSeq(page.readPosition.sequenceNumber)) {
      s.lastReadSent = page.readPosition.sequenceNumber;
    }
    el.loadOlder.hidden = !(s.hasMore && s.nextBefore);
    renderAllStatuses(s);
  }

  // A few tries with backoff: without history the subscription cannot say where to start.
  async function loadInitialHistory(s) {
    for (let i = 0; i < 3; i++) {
      try {
        const page = await fetchHistory(s, null);
        if (session !== s) return false;
        applyHistoryPage(s, page);
        el.historyNote.textContent = (page.messages || []).length ? '' : 'No messages yet.';
        scrollToBottom();
        return true;
      } catch (e) {
        if (e instanceof AuthError) { sessionOver(s, e.message); return false; }
        await new Promise((r) => setTimeout(r, BACKOFF_MIN_MS * 2 ** i));
        if (session !== s) return false;
      }
    }
    return false;
  }

  async function loadOlder() {
    const s = session;
    if (!s || !s.nextBefore) return;
    el.loadOlder.disabled = true;
    // Keep what the user is looking at in place while older messages are added above it.
    const list = el.messages;
    const fromBottom = list.scrollHeight - list.scrollTop;
    try {
      const page = await fetchHistory(s, s.nextBefore);
      if (session !== s) return;
      applyHistoryPage(s, page);
      list.scrollTop = list.scrollHeight - fromBottom;
    } catch (e) {
      if (e instanceof AuthError) { sessionOver(s, e.message); return; }
      el.historyNote.textContent = 'Could not load older messages; try again.';
    } finally {
      el.loadOlder.disabled = false;
    }
  }

  // ------------------------------------------------------------------ search

  const SEARCH_MIN_CHARS = 3; // the API's rule (a trigram); counted in code points as it counts
  const SEARCH_PAGE = 20;

  // One result: who, when and the text, as the timeline shows a message (text only, never markup).
  function buildSearchHit(hit) {
    const li = document.createElement('li');
    li.className = 'msg';
    if (hit.messageId) li.dataset.messageId = hit.messageId;
    const meta = document.createElement('div');
    meta.className = 'meta';
    const author = document.createElement('span');
    author.className = 'author';
    author.textContent = hit.username || '';
    const time = document.createElement('time');
    time.dateTime = hit.timestamp || '';
    time.textContent = formatTime(hit.timestamp);
    meta.append(author, ' ', time);
    const text = document.createElement('p');
    text.className = 'text';
    text.textContent = hit.message || '';
    li.append(meta, text);
    return li;
  }

  async function runSearch(offset) {
    const s = session;
    const q = el.searchQ.value.trim();
    if (!s || !q) return;
    el.searchResults.hidden = false;
    if ([...q].length < SEARCH_MIN_CHARS) {
      el.searchList.replaceChildren();
      el.searchMore.hidden = true;
      el.searchNote.textContent = `Type at least ${SEARCH_MIN_CHARS} characters to search.`;
      return;
    }
    const params = new URLSearchParams({ q, limit: String(SEARCH_PAGE), offset: String(offset) });
    el.searchNote.textContent = 'Searching…';
    el.searchMore.hidden = true;
    try {
      const url = `${apiBase()}/api/rooms/${encodeURIComponent(s.room)}/search?${params}`;
      const res = await apiGet(s, url);
      if (session !== s) return;
      if (!res.ok) {
        el.searchNote.textContent = `Search failed: ${errorText(await res.text())}`;
        return;
      }
      const page = await res.json();
      if (session !== s) return;
      if (offset === 0) el.searchList.replaceChildren();
      for (const hit of page.results || []) el.searchList.append(buildSearchHit(hit));
      const shown = el.searchList.children.length;
      el.searchNote.textContent = shown ? `${shown}${page.hasMore ? '+' : ''} found for “${q}”` : `Nothing found for “${q}”.`;
      el.searchMore.hidden = !page.hasMore;
      el.searchMore.dataset.offset = String(page.nextOffset ?? shown);
    } catch (e) {
      if (session === s) el.searchNote.textContent = 'Search is unavailable right now; try again.';
    }
  }

  function closeSearch() {
    el.searchResults.hidden = true;
    el.searchList.replaceChildren();
    el.searchQ.value = '';
  }

  // ------------------------------------------------------------------ consumer socket (events)

  function subscribe(s, historyLoaded) {
    s.consumer = reconnectingSocket('consumer', () => withToken(s, 'consumer', () => {
      const q = new URLSearchParams({ userId: s.userId, username: s.username });
      // since=0 after an empty history: the room had nothing, so replay whatever arrived since.
      // Without any history (API down) we can only start live.
      const since = s.newestSeq || (historyLoaded ? '0' : null);
      if (since) q.set('since', since);
      return `${eventsBase()}/chat/${encodeURIComponent(s.room)}?${q}`;
    }), {
      onState: (st) => { s.consumerState = st; renderConn(); },
      onOpen: () => {
        s.refusedOpens.consumer = 0;
        s.consumerNote = '';
        // A fresh subscription starts with a full presence snapshot ("present" events).
        s.members.clear();
        renderMembers();
        scheduleRead(s);
      },
      onMessage: (data) => onConsumerFrame(s, data),
      onClose: (code, reason, opened) => {
        s.consumerNote = closeReason(code);
        for (const t of s.typing.values()) clearTimeout(t.timer);
        s.typing.clear();
        renderTyping();
        el.online.classList.add('stale');
        return afterClose(s, 'consumer', code, opened);
      },
      onNoUrl: (e) => noToken(s, 'consumer', e),
    });
  }

  function closeReason(code) {
    switch (code) {
      case 1001: return 'the server is restarting';
      case 1011: return 'history could not be read';
      case 4008: return 'connection too slow';
      case 4009: return 'the room is full';
      case 4013: return 'catching up';
      case CLOSE_TOKEN_EXPIRED: return 'renewing the login';
      default: return '';
    }
  }

  function onConsumerFrame(s, data) {
    let ev;
    try { ev = JSON.parse(data); } catch (e) { return; }
    if (!ev || typeof ev !== 'object') return;
    switch (ev.type) {
      case 'MESSAGE': addMessageEvent(s, ev, false); break;
      case 'PRESENCE': onPresence(s, ev); break;
      case 'TYPING': onTyping(s, ev); break;
      case 'READ': onRead(s, ev); break;
      case 'ERROR': el.historyNote.textContent = `Server: ${ev.errorCode}: ${ev.errorMessage}`; break;
      default: break; // newer event types are ignored, as the protocol asks
    }
  }

  // A MESSAGE from history, a replay or live. Merges into what is on screen, never duplicates.
  function addMessageEvent(s, ev, fromHistory) {
    if (!isSeq(ev.sequenceNumber) || !ev.messageId) return;
    const userId = String(ev.userId);
    const own = userId === s.userId;
    let entry = s.byMessageId.get(ev.messageId) || s.bySeq.get(seqKey(ev.sequenceNumber));
    // Our own message still waiting for its ack: live events carry our clientMessageId.
    if (!entry && own && ev.clientMessageId) entry = s.byClientId.get(ev.clientMessageId);
    if (entry && entry.received) return; // already shown: a replay overlapping history

    if (!entry) {
      entry = { key: `m${++s.localCounter}`, own };
      s.entries.push(entry);
    }
    Object.assign(entry, {
      messageId: ev.messageId, seq: ev.sequenceNumber, userId, username: ev.username,
      message: ev.message, messageType: ev.messageType || 'TEXT',
      timestamp: ev.timestamp, serverTimestamp: ev.serverTimestamp, received: true,
    });
    if (own) { entry.status = 'delivered'; entry.error = null; clearTimeout(entry.ackTimer); }
    s.byMessageId.set(entry.messageId, entry);
    s.bySeq.set(seqKey(entry.seq), entry);
    s.usernames.set(userId, ev.username);
    if (!s.newestSeq || seqCmp(entry.seq, s.newestSeq) > 0) s.newestSeq = entry.seq;

    const stick = nearBottom();
    placeEntry(s, entry);
    renderEntry(s, entry);
    if (!fromHistory) {
      el.historyNote.textContent = '';
      stopTyping(s, userId); // they sent what they were typing
      if (stick) scrollToBottom();
      scheduleRead(s);
    }
  }

  function onPresence(s, ev) {
    const userId = String(ev.userId);
    if (ev.status === 'ONLINE') {
      s.members.set(userId, ev.username);
      s.usernames.set(userId, ev.username);
    } else if (ev.status === 'OFFLINE') {
      s.members.delete(userId);
      stopTyping(s, userId);
    }
    el.online.classList.remove('stale');
    renderMembers();
  }

  function onTyping(s, ev) {
    const userId = String(ev.userId);
    if (userId === s.userId) return;
    const prev = s.typing.get(userId);
    if (prev) clearTimeout(prev.timer);
    s.typing.set(userId, {
      username: ev.username,
      timer: setTimeout(() => stopTyping(s, userId), TYPING_SHOWN_MS),
    });
    renderTyping();
  }

  function stopTyping(s, userId) {
    const t = s.typing.get(userId);
    if (!t) return;
    clearTimeout(t.timer);
    s.typing.delete(userId);
    renderTyping();
  }

  function noteReadPosition(s, userId, seq) {
    if (!isSeq(seq)) return false;
    const prev = s.readPositions.get(userId);
    if (prev && seqCmp(prev, seq) >= 0) return false;
    s.readPositions.set(userId, seq);
    return true;
  }

  function onRead(s, ev) {
    const userId = String(ev.userId);
    if (ev.username) s.usernames.set(userId, ev.username);
    if (noteReadPosition(s, userId, ev.sequenceNumber)) renderAllStatuses(s);
  }

  // Tell the room we have read up to the newest message, when someone can actually see it.
  function scheduleRead(s) {
    clearTimeout(s.readTimer);
    s.readTimer = setTimeout(() => sendRead(s), READ_DEBOUNCE_MS);
  }

  function sendRead(s) {
    if (session !== s || document.visibilityState !== 'visible' || !s.newestSeq) return;
    if (s.lastReadSent && seqCmp(s.newestSeq, s.lastReadSent) <= 0) return;
    const frame = { type: 'READ', roomId: s.room, sequenceNumber: s.newestSeq };
    if (s.consumer && s.consumer.send(JSON.stringify(frame))) s.lastReadSent = s.newestSeq;
  }

  // ------------------------------------------------------------------ producer socket (sending)

  function sendText(s, text) {
    const clientMessageId = `c-${randomToken(16)}`;
    const timestamp = new Date().toISOString();
    const frame = JSON.stringify({
      userId: s.userId, username: s.username, message: text, timestamp, messageType: 'TEXT', clientMessageId,
    });
    const entry = {
      key: `m${++s.localCounter}`, own: true, clientMessageId, frame, userId: s.userId,
      username: s.username, message: text, messageType: 'TEXT', timestamp,
      status: 'sending', received: false,
    };
    s.byClientId.set(clientMessageId, entry);
    s.entries.push(entry);
    placeEntry(s, entry);
    // The producer does not parse a frame over its size limit, so its error could not name this
    // message: refuse it here. Every other rule (length, characters) is the server's to judge.
    if (utf8Bytes(frame) > config.limits.maxFrameBytes) {
      entry.status = 'error';
      entry.error = { code: 'MESSAGE_TOO_LARGE',
        message: `the message is ${utf8Bytes(text)} bytes; frames are limited to ${config.limits.maxFrameBytes}` };
      entry.noRetry = true;
    } else {
      transmit(s, entry);
    }
    renderEntry(s, entry);
    scrollToBottom();
  }

  // Sends (or re-sends: retry, reconnect) an own message with the same clientMessageId, which the
  // producer maps to the same messageId and queues once.
  function transmit(s, entry) {
    entry.status = 'sending';
    entry.error = null;
    clearTimeout(entry.ackTimer);
    if (s.producer.send(entry.frame)) {
      entry.ackTimer = setTimeout(() => {
        if (entry.status !== 'sending') return;
        entry.status = 'error';
        entry.error = { code: 'NO_ANSWER', message: 'the server did not answer in time' };
        renderEntry(s, entry);
      }, ACK_TIMEOUT_MS);
    } // else: not connected; flushOutbox sends it when the producer socket opens
    renderEntry(s, entry);
  }

  // After (re)connecting: everything still unanswered goes again, in the order it was written.
  function flushOutbox(s) {
    for (const entry of s.entries) {
      if (entry.own && !entry.received && entry.status === 'sending') transmit(s, entry);
    }
  }

  function onProducerFrame(s, data) {
    let f;
    try { f = JSON.parse(data); } catch (e) { return; }
    if (!f || typeof f !== 'object') return;
    let entry = f.clientMessageId ? s.byClientId.get(f.clientMessageId) : null;
    if (!entry && f.status === 'ERROR') entry = onlyEntrySending(s);
    if (!entry) {
      if (f.status === 'ERROR') el.historyNote.textContent = `Server: ${f.errorCode}: ${f.errorMessage}`;
      return;
    }
    clearTimeout(entry.ackTimer);
    if (f.status === 'SUCCESS') onAck(s, entry, f);
    else if (f.status === 'ERROR' && !entry.received) {
      entry.status = 'error';
      entry.error = { code: f.errorCode || 'ERROR', message: f.errorMessage || '' };
      renderEntry(s, entry);
    }
  }

  // An error without a clientMessageId (the frame could not be read) belongs to the one message
  // in flight, if there is exactly one; otherwise it is shown as a general notice.
  function onlyEntrySending(s) {
    const sending = s.entries.filter((e) => e.own && e.status === 'sending');
    return sending.length === 1 ? sending[0] : null;
  }

  function onAck(s, entry, f) {
    if (f.messageId) {
      const other = s.byMessageId.get(f.messageId);
      if (other && other !== entry) {
        // The MESSAGE event came first without our clientMessageId (a replay): it is this one.
        removeEntry(s, entry);
        other.own = true;
        other.clientMessageId = entry.clientMessageId;
        s.byClientId.set(entry.clientMessageId, other);
        renderEntry(s, other);
        return;
      }
      entry.messageId = f.messageId;
      s.byMessageId.set(f.messageId, entry);
    }
    if (entry.received) return; // already "delivered": an ack never moves it back
    entry.status = 'sent';
    entry.serverTimestamp = f.serverTimestamp || entry.serverTimestamp;
    // Its place in the room is known now. Not a resume point: earlier messages of others may
    // still be on their way, so newestSeq only moves on what the consumer delivered.
    if (isSeq(f.sequenceNumber)) { entry.ackSeq = f.sequenceNumber; placeEntry(s, entry); }
    renderEntry(s, entry);
  }

  function onInput() {
    const s = session;
    renderCount();
    if (!s || !el.text.value.trim()) return;
    // The producer drops TYPING frames closer together than its interval; stay just above it.
    const now = Date.now();
    if (now - s.lastTypingSent < config.limits.typingIntervalMs + 100) return;
    const frame = { type: 'TYPING', userId: s.userId, username: s.username };
    if (s.producer && s.producer.send(JSON.stringify(frame))) s.lastTypingSent = now;
  }

  // ------------------------------------------------------------------ ordering on screen

  const entrySeq = (e) => e.seq || e.ackSeq || null;

  // Sequenced messages in sequence order; messages without a number yet (sending) at the end in
  // the order they were written. Moves the entry's element to match.
  function placeEntry(s, entry) {
    const list = s.entries;
    list.splice(list.indexOf(entry), 1);
    let i = list.length;
    const seq = entrySeq(entry);
    if (seq) {
      while (i > 0) {
        const prev = entrySeq(list[i - 1]);
        if (prev && seqCmp(prev, seq) <= 0) break;
        i--;
      }
    }
    list.splice(i, 0, entry);
    if (!entry.el) entry.el = buildEntryElement(entry);
    const next = list[i + 1];
    el.messages.insertBefore(entry.el, next ? next.el : null);
  }

  function removeEntry(s, entry) {
    const i = s.entries.indexOf(entry);
    if (i >= 0) s.entries.splice(i, 1);
    if (entry.el) entry.el.remove();
  }

  // ------------------------------------------------------------------ rendering

  function buildEntryElement(entry) {
    const li = document.createElement('li');
    li.className = 'msg';
    const meta = document.createElement('div');
    meta.className = 'meta';
    const author = document.createElement('span');
    author.className = 'author';
    const time = document.createElement('time');
    meta.append(author, ' ', time);
    const text = document.createElement('p');
    text.className = 'text';
    const status = document.createElement('div');
    status.className = 'status';
    li.append(meta, text, status);
    return li;
  }

  // Only textContent is ever set from message data: nothing a user sends can become markup.
  function renderEntry(s, entry) {
    const li = entry.el;
    const [meta, text, status] = li.children;
    li.classList.toggle('own', entry.own);
    li.classList.toggle('system', entry.messageType !== 'TEXT');
    if (entry.messageId) li.dataset.messageId = entry.messageId;
    if (entry.clientMessageId) li.dataset.clientMessageId = entry.clientMessageId;
    if (entry.seq) li.dataset.seq = entry.seq;
    if (entry.userId) li.dataset.userId = entry.userId;
    meta.children[0].textContent = entry.own ? `${entry.username} (you)` : entry.username;
    const when = entry.serverTimestamp || entry.timestamp;
    meta.children[1].textContent = formatTime(when);
    meta.children[1].dateTime = when || '';
    if (entry.messageType === 'JOIN') text.textContent = `joined the room${entry.message ? ': ' + entry.message : ''}`;
    else if (entry.messageType === 'LEAVE') text.textContent = `left the room${entry.message ? ': ' + entry.message : ''}`;
    else text.textContent = entry.message;
    if (entry.own) renderStatus(s, entry, status);
    else status.replaceChildren();
  }

  function renderStatus(s, entry, box) {
    const readers = readersOf(s, entry);
    const shown = entry.status === 'delivered' && readers.length ? 'read' : entry.status;
    entry.el.dataset.status = shown;
    const label = document.createElement('span');
    label.className = 'status-text';
    if (shown === 'sending') label.textContent = 'sending…';
    else if (shown === 'sent') label.textContent = 'sent';
    else if (shown === 'delivered') label.textContent = 'delivered';
    else if (shown === 'read') {
      label.textContent = `read by ${readers.length}`;
      label.title = readers.map((id) => s.usernames.get(id) || `user ${id}`).join(', ');
    } else if (shown === 'error') {
      label.textContent = `not sent: ${entry.error.code}${entry.error.message ? ' — ' + entry.error.message : ''}`;
      label.setAttribute('role', 'alert');
    }
    box.replaceChildren(label);
    if (shown === 'error' && !entry.noRetry) {
      const retry = document.createElement('button');
      retry.type = 'button';
      retry.className = 'retry link';
      retry.textContent = 'Retry';
      retry.addEventListener('click', () => { if (session === s) transmit(s, entry); });
      box.append(' ', retry);
    }
  }

  // Other members whose read position is at or past this message.
  function readersOf(s, entry) {
    const seq = entrySeq(entry);
    if (!seq || !entry.received) return [];
    const out = [];
    for (const [userId, pos] of s.readPositions) {
      if (userId !== s.userId && seqCmp(pos, seq) >= 0) out.push(userId);
    }
    return out;
  }

  function renderAllStatuses(s) {
    for (const e of s.entries) if (e.own && e.el) renderStatus(s, e, e.el.children[2]);
  }

  function renderMembers() {
    const s = session;
    const items = s ? [...s.members].sort((a, b) => a[1].localeCompare(b[1])) : [];
    el.online.replaceChildren(...items.map(([userId, username]) => {
      const li = document.createElement('li');
      li.dataset.userId = userId;
      li.textContent = userId === s.userId ? `${username} (you)` : username;
      return li;
    }));
    el.onlineCount.textContent = String(items.length);
  }

  function renderTyping() {
    const names = session ? [...session.typing.values()].map((t) => t.username) : [];
    if (names.length === 0) el.typing.textContent = '';
    else if (names.length === 1) el.typing.textContent = `${names[0]} is typing…`;
    else if (names.length === 2) el.typing.textContent = `${names[0]} and ${names[1]} are typing…`;
    else el.typing.textContent = `${names.length} people are typing…`;
    el.typing.hidden = names.length === 0;
  }

  function renderConn() {
    const s = session;
    const p = s ? s.producerState : 'idle', c = s ? s.consumerState : 'idle';
    el.conn.dataset.producer = p;
    el.conn.dataset.consumer = c;
    let text;
    if (!s) text = 'Not connected';
    else if (s.authProblem) text = s.authProblem;
    else if (p === 'open' && c === 'open') text = 'Connected';
    else if (p !== 'open' && c !== 'open') text = 'Connecting…';
    else if (p !== 'open') text = 'Reconnecting (sending paused)…';
    else text = `Reconnecting (new messages paused${s.consumerNote ? ': ' + s.consumerNote : ''})…`;
    el.connText.textContent = text;
    el.conn.className = `conn ${!s ? '' : s.authProblem ? 'bad' : p === 'open' && c === 'open' ? 'ok' : 'warn'}`;
  }

  function renderCount() {
    const n = codePoints(el.text.value), max = config.limits.maxMessageChars;
    // Shown near the limit only; over it the server will refuse the message, and says why.
    el.textCount.textContent = n > max * 0.8 ? `${n}/${max}` : '';
    el.textCount.classList.toggle('over', n > max);
  }

  function nearBottom() {
    const l = el.messages;
    return l.scrollHeight - l.scrollTop - l.clientHeight < 80;
  }
  function scrollToBottom() { el.messages.scrollTop = el.messages.scrollHeight; }

  // ------------------------------------------------------------------ forms and start-up

  function validateJoin(username, roomText) {
    if (!USERNAME_RE.test(username)) return 'The user name must be 3–20 letters or digits.';
    if (!ROOM_RE.test(roomText)) {
      return 'The room must be 1–64 letters, digits, _ or - (for example 7 or team-alpha).';
    }
    return '';
  }

  function onJoinSubmit(e) {
    e.preventDefault();
    const username = el.username.value.trim(), roomText = el.room.value.trim();
    const problem = validateJoin(username, roomText);
    el.joinError.textContent = problem;
    if (!problem) logInAndJoin(username, roomText);
  }

  function onComposerSubmit(e) {
    e.preventDefault();
    const s = session, text = el.text.value;
    if (!s || !text.trim()) return;
    sendText(s, text);
    el.text.value = '';
    renderCount();
  }

  // Enter sends, Shift+Enter starts a new line.
  function onComposerKey(e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) onComposerSubmit(e);
  }

  async function loadConfig() {
    try {
      const res = await fetch('/config.json', { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const c = await res.json();
      config = {
        eventsUrl: typeof c.eventsUrl === 'string' ? c.eventsUrl : '',
        apiUrl: typeof c.apiUrl === 'string' ? c.apiUrl : '',
        limits: Object.assign({}, DEFAULT_CONFIG.limits, c.limits || {}),
        auth: readAuthConfig(c.auth),
      };
    } catch (e) {
      // Defaults are the services' own defaults, so the page still works against them.
      el.joinError.textContent = `Could not read /config.json (${e.message}); using defaults.`;
    }
  }

  // config.json's "auth" (absent on a server without identity tokens: auth off).
  function readAuthConfig(a) {
    if (!a || typeof a !== 'object') return DEFAULT_CONFIG.auth;
    const devTokens = a.devTokens === true;
    return { required: a.required === true, devTokens,
      tokenUrl: devTokens && typeof a.tokenUrl === 'string' ? a.tokenUrl : '',
      // The claim the services read the userId from (CHATFLOW_AUTH_USER_ID_CLAIM): an issuer's
      // sub is not always a ChatFlow userId (Cognito: custom:chatflow_user_id).
      userIdClaim: typeof a.userIdClaim === 'string' && a.userIdClaim ? a.userIdClaim : 'sub' };
  }

  // What the join form says about logging in: nothing with auth off.
  function renderLoginNote() {
    const a = config.auth;
    let note = '';
    if (a.required && a.devTokens) {
      note = 'Development login: joining logs you in under this name, without a password.';
    } else if (a.required) {
      const c = storedProviderToken() ? jwtClaims(storedProviderToken()) : null;
      const name = c && [c.name, c.preferred_username].find((n) => USERNAME_RE.test(n || ''));
      if (name && !el.username.value) el.username.value = name;
      note = c ? `Logged in${name ? ' as ' + name : ''} by your identity provider.`
        : 'This server needs a login: sign in with your identity provider first.';
    }
    el.loginNote.textContent = note;
    el.loginNote.hidden = !note;
  }

  // #room=team-alpha&username=bob: a reload (or a shared link) goes straight back into the room.
  function joinFromHash() {
    const h = new URLSearchParams(location.hash.replace(/^#/, ''));
    const username = h.get('username') || '', roomText = h.get('room') || '';
    if (!username && !roomText) return;
    el.username.value = username;
    el.room.value = roomText;
    if (!validateJoin(username, roomText)) logInAndJoin(username, roomText);
  }

  async function start() {
    el.joinForm.addEventListener('submit', onJoinSubmit);
    el.composer.addEventListener('submit', onComposerSubmit);
    el.text.addEventListener('keydown', onComposerKey);
    el.text.addEventListener('input', onInput);
    el.leave.addEventListener('click', leave);
    el.loadOlder.addEventListener('click', loadOlder);
    el.searchForm.addEventListener('submit', (e) => { e.preventDefault(); runSearch(0); });
    el.searchMore.addEventListener('click', () => runSearch(Number(el.searchMore.dataset.offset) || 0));
    el.searchClose.addEventListener('click', closeSearch);
    document.addEventListener('visibilitychange', () => { if (session) scheduleRead(session); });
    takeTokenFromHash(); // before anything else reads the fragment
    await loadConfig();
    el.joinButton.disabled = false;
    renderConn();
    renderLoginNote();
    joinFromHash();
  }

  start();
})();
