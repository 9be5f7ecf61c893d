/* tiktok-edge pixel.js: first-party events to tiktok-edge, which hashes PII and forwards
   them to TikTok's Events API. Snippet:
   <script>window.edge=window.edge||function(){(edge.q=edge.q||[]).push(arguments)};
   edge('init','px_…');</script><script async src="https://YOUR-EDGE/pixel.js"></script>
   Then edge('track','AddToCart',{value:9.5,currency:'USD'},{event_id:'order-1'});
   edge('identify',{email:'a@b.c'}); edge('consent',true). The event_id used for each
   event is returned by edge.track, kept in edge.lastEventId and sent with an
   'edge:event' DOM event, so TikTok's browser pixel can send the same id (dedup). */
(function (w, d) {
  var q = (w.edge && w.edge.q) || [], cfg = w.edge && w.edge.cfg || {};
  var s = d.currentScript || d.querySelector('script[src*="pixel.js"]');
  var base = s ? s.src.replace(/\/pixel\.js.*$/, '') : '';
  var pixel = cfg.id || null, held = [], user = {}, consent = cfg.consent !== 'opt_in';
  function cookie(n) {
    var m = d.cookie.match(new RegExp('(?:^|; )' + n + '=([^;]*)'));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function rid() {
    var a = new Uint8Array(12);
    (w.crypto || w.msCrypto).getRandomValues(a);
    return 'edge-' + Array.prototype.map.call(a, function (b) { return (b + 256).toString(16).slice(1); }).join('');
  }
  var clid = new URLSearchParams(w.location.search).get('ttclid');
  if (clid) d.cookie = 'ttclid=' + encodeURIComponent(clid) + ';max-age=2592000;path=/;SameSite=Lax';
  function send(e) {
    var body = JSON.stringify({ pixel_id: pixel, events: [e] });
    var url = base + '/pixel/events?pixel=' + encodeURIComponent(pixel);
    if (!(w.navigator.sendBeacon && w.navigator.sendBeacon(url, new Blob([body], { type: 'text/plain' })))) {
      w.fetch && w.fetch(url, { method: 'POST', body: body, keepalive: true, headers: { 'Content-Type': 'text/plain' } });
    }
  }
  function track(name, props, opts) {
    opts = opts || {};
    var id = opts.event_id || rid(), u = {}, k;
    for (k in user) u[k] = user[k];
    u.ttclid = cookie('ttclid') || undefined;
    u.ttp = cookie('_ttp') || undefined;
    var e = {
      event: name, event_id: id, event_time: Math.floor(Date.now() / 1000), user: u,
      page: { url: w.location.href, referrer: d.referrer || undefined }, properties: props || {}
    };
    edge.lastEventId = id;
    if (opts.callback) opts.callback(id);
    try { d.dispatchEvent(new CustomEvent('edge:event', { detail: { event: name, event_id: id } })); } catch (x) {}
    if (consent && pixel) send(e); else held.push(e);
    return id;
  }
  var api = {
    init: function (id, o) {
      pixel = id;
      if (o && o.consent === 'opt_in') consent = false;
      if (!o || o.page_view !== false) track('PageView');
    },
    track: track,
    identify: function (u) { for (var k in u) user[k] = u[k]; },
    consent: function (yes) {
      consent = !!yes;
      if (consent) { while (held.length) send(held.shift()); } else held.length = 0;
    }
  };
  function edge(cmd) {
    var f = api[cmd];
    return f ? f.apply(null, Array.prototype.slice.call(arguments, 1)) : undefined;
  }
  edge.track = track;
  w.edge = edge;
  if (cfg.id) api.init(cfg.id, cfg);
  for (var i = 0; i < q.length; i++) edge.apply(null, q[i]);
})(window, document);
