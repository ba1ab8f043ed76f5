"""The gallery's static page, style and script, as `clip_assets.dataset.gallery` writes them.

Plain HTML, CSS and JavaScript without a build step or a library. The script must agree with the
Python side on two things, each named where it is defined: how captions split into words
(`caption_words`) and where a word's Bloom filter bits are (`bloom_positions`).
"""

GALLERY_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Clip gallery</title>
<link rel="stylesheet" href="gallery.css">
</head>
<body>
<header>
  <h1>Clip gallery</h1>
  <form id="filters" autocomplete="off">
    <label>Caption words <input id="text" type="search" placeholder="e.g. cyclist crossing"></label>
    <label>Min. aesthetic score <input id="min-aesthetic" type="number" step="0.01"></label>
    <label>Min. motion score <input id="min-motion" type="number" step="0.01"></label>
    <label>Video <select id="video"><option value="">all videos</option></select></label>
    <button type="submit" id="apply">Filter</button>
    <button type="button" id="clear">Clear</button>
  </form>
  <nav>
    <button type="button" id="previous">&#9664; Previous</button>
    <span id="status" aria-live="polite">Loading the index&hellip;</span>
    <button type="button" id="next">Next &#9654;</button>
  </nav>
</header>
<main id="grid"></main>
<noscript>The gallery needs JavaScript: its clips are loaded page by page.</noscript>
<script src="gallery.js"></script>
<script src="filter.js"></script>
</body>
</html>
"""

GALLERY_CSS = """body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f4f5; color: #18181b; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #d4d4d8; padding: 8px 16px; z-index: 1; }
h1 { font-size: 18px; margin: 0 0 6px; }
form, nav { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin: 4px 0; }
input[type=number] { width: 6em; }
select { max-width: 24em; }
#status { min-width: 24em; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 12px; padding: 16px; }
figure.clip { margin: 0; background: #fff; border: 1px solid #e4e4e7; border-radius: 6px; overflow: hidden; }
figure.clip img, figure.clip .no-preview { display: block; width: 100%; aspect-ratio: 4 / 3; object-fit: contain;
  background: #27272a; }
figure.clip .no-preview { color: #a1a1aa; display: grid; place-items: center; }
figcaption { padding: 6px 8px; }
.facts { color: #52525b; font-size: 12px; }
.video { color: #3f3f46; font-size: 12px; overflow-wrap: anywhere; }
.caption { margin: 4px 0; }
.caption .model { color: #6d28d9; font-size: 11px; margin-right: 4px; }
.caption.enhanced { color: #3f3f46; font-style: italic; }
.links a, .links .no-mp4 { margin-right: 8px; }
.links .no-mp4 { color: #b91c1c; }
"""

GALLERY_SCRIPT = r""""use strict";
// The clip gallery: pages of clips loaded as <script> files (file:// forbids fetch of local files), a
// filter index with one record per page so a filter loads only pages that may match.
(function () {
  const FNV_PRIME = 0x01000193;
  const FNV_OFFSET = 0x811c9dc5;
  const FNV_OFFSET_SECOND = (0x01000193 ^ 0x5bd1e995) >>> 0;
  const MAX_CACHED_PAGES = 24;
  const encoder = new TextEncoder();
  const state = {
    index: null, cache: new Map(), pending: new Map(), blooms: new Map(), filter: null, view: 0,
    matches: [], candidates: [], scanned: 0, generation: 0, pagesLoaded: 0,
  };
  const $ = (id) => document.getElementById(id);

  // Same split as clip_assets.dataset.gallery.caption_words: lowercase runs of letters and digits.
  function words(text) {
    return String(text).toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  }

  function fnv1a(bytes, offset) {
    let value = offset >>> 0;
    for (const byte of bytes) {
      value = Math.imul((value ^ byte) >>> 0, FNV_PRIME) >>> 0;
    }
    return value;
  }

  // Same bits as clip_assets.dataset.gallery.bloom_positions.
  function bloomHas(pageNumber, word) {
    const summary = state.index.pages[pageNumber];
    let bloom = state.blooms.get(pageNumber);
    if (bloom === undefined) {
      bloom = Uint8Array.from(atob(summary.bloom), (c) => c.charCodeAt(0));
      state.blooms.set(pageNumber, bloom);
    }
    const bytes = encoder.encode(word);
    const first = fnv1a(bytes, FNV_OFFSET);
    const second = (fnv1a(bytes, FNV_OFFSET_SECOND) | 1) >>> 0;
    for (let i = 0; i < state.index.bloomHashes; i++) {
      const position = (first + i * second) % summary.bloomBits;
      if (!(bloom[position >> 3] & (1 << (position & 7)))) return false;
    }
    return true;
  }

  function atLeast(value, minimum) {
    return minimum === null || (value !== null && value >= minimum);
  }

  function pageMayMatch(pageNumber, filter) {
    const summary = state.index.pages[pageNumber];
    if (filter.video !== null && (summary.videos[0] > filter.video || summary.videos[1] < filter.video)) return false;
    if (!atLeast(summary.maxAesthetic, filter.minAesthetic)) return false;
    if (!atLeast(summary.maxMotion, filter.minMotion)) return false;
    return filter.words.every((word) => bloomHas(pageNumber, word));
  }

  function clipMatches(clip, filter) {
    if (filter.video !== null && clip.v !== filter.video) return false;
    if (!atLeast(clip.a, filter.minAesthetic) || !atLeast(clip.m, filter.minMotion)) return false;
    if (!filter.words.length) return true;
    const have = new Set();
    for (const [, text] of clip.c.concat(clip.e)) for (const word of words(text)) have.add(word);
    return filter.words.every((word) => have.has(word));
  }

  function pageFile(pageNumber) {
    return "page-" + String(pageNumber).padStart(5, "0") + ".js";
  }

  function remember(pageNumber, clips) {
    state.cache.set(pageNumber, clips);
    while (state.cache.size > MAX_CACHED_PAGES) state.cache.delete(state.cache.keys().next().value);
  }

  function loadPage(pageNumber) {
    if (state.cache.has(pageNumber)) return Promise.resolve(state.cache.get(pageNumber));
    if (state.pending.has(pageNumber)) return state.pending.get(pageNumber).promise;
    const entry = {};
    entry.promise = new Promise((resolve, reject) => { entry.resolve = resolve; entry.reject = reject; });
    state.pending.set(pageNumber, entry);
    const script = document.createElement("script");
    script.src = pageFile(pageNumber);
    script.onload = () => {
      script.remove();
      if (state.pending.get(pageNumber) === entry) {
        state.pending.delete(pageNumber);
        entry.reject(new Error(script.src + " holds no page " + pageNumber + " (rebuild the gallery)"));
      }
    };
    script.onerror = () => {
      script.remove();
      state.pending.delete(pageNumber);
      entry.reject(new Error("cannot load " + script.src));
    };
    document.head.appendChild(script);
    return entry.promise;
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function captionLine(model, text, enhanced) {
    const line = element("p", enhanced ? "caption enhanced" : "caption");
    line.appendChild(element("span", "model", model));
    line.appendChild(document.createTextNode(text));
    return line;
  }

  function tile(clip) {
    const figure = element("figure", "clip");
    figure.dataset.clipId = clip.id;
    // A clip whose MP4 was never written (clip.f is null) is shown all the same, without the link.
    const link = element(clip.f ? "a" : "div");
    if (clip.f) {
      link.href = clip.f;
      link.title = "the clip's MP4";
    }
    if (clip.p) {
      const image = element("img", "preview");
      image.loading = "lazy";
      image.decoding = "async";
      image.alt = "animated preview of clip " + clip.id;
      image.dataset.src = clip.p;  // set once in the page: an image outside a document loads at once
      link.appendChild(image);
    } else {
      link.appendChild(element("div", "no-preview", "no preview"));
    }
    figure.appendChild(link);
    const caption = element("figcaption");
    const facts = [];
    if (clip.d !== null) facts.push(clip.d.toFixed(2) + " s");
    if (clip.t !== null) facts.push("at " + clip.t.toFixed(2) + " s");
    if (clip.a !== null) facts.push("aesthetic " + clip.a.toFixed(2));
    if (clip.m !== null) facts.push("motion " + clip.m.toFixed(2));
    caption.appendChild(element("div", "facts", facts.join(" · ")));
    caption.appendChild(element("div", "video", state.index.videos[clip.v]));
    for (const [model, text] of clip.c) caption.appendChild(captionLine(model, text, false));
    for (const [model, text] of clip.e) caption.appendChild(captionLine(model, text, true));
    const links = element("div", "links");
    const mp4 = clip.f ? element("a", "mp4", "MP4") : element("span", "no-mp4", "no MP4");
    if (clip.f) mp4.href = clip.f;
    const metadata = element("a", "metadata", "metadata");
    metadata.href = clip.j;
    links.append(mp4, metadata);
    caption.appendChild(links);
    figure.appendChild(caption);
    return figure;
  }

  function render(clips) {
    const grid = $("grid");
    const fragment = document.createDocumentFragment();
    for (const clip of clips) fragment.appendChild(tile(clip));
    grid.replaceChildren(fragment);
    for (const image of grid.querySelectorAll("img[data-src]")) {
      image.src = image.dataset.src;
      delete image.dataset.src;
    }
  }

  function setStatus(text, done) {
    $("status").textContent = text;
    document.body.dataset.state = done ? "ready" : "loading";
  }

  function range(first, count) {
    return count ? (first + 1) + "-" + (first + count) : "none";
  }

  async function showAll(generation) {
    const index = state.index;
    const pages = index.pages.length;
    if (!pages) {
      render([]);
      setStatus("No passed clips yet.", true);
      updateButtons();
      return;
    }
    setStatus("Loading page " + (state.view + 1) + " of " + pages + "…", false);
    const clips = await loadPage(state.view);
    if (generation !== state.generation) return;
    render(clips);
    const first = state.view * index.pageSize;
    setStatus("Page " + (state.view + 1) + " of " + pages + " · clips " + range(first, clips.length) + " of " +
      index.clips, true);
    updateButtons();
  }

  async function showFiltered(generation) {
    const size = state.index.pageSize;
    const first = state.view * size;
    const wanted = first + size;
    const report = (done) => {
      const shown = Math.max(0, Math.min(size, state.matches.length - first));
      const total = done ? String(state.matches.length) : "at least " + state.matches.length;
      setStatus("Matches " + range(first, shown) + " of " + total + " · " + state.scanned + " of " +
        state.candidates.length + " pages that may match read (of " + state.index.pages.length + ")", done);
    };
    while (state.matches.length < wanted && state.scanned < state.candidates.length) {
      report(false);
      const clips = await loadPage(state.candidates[state.scanned]);
      if (generation !== state.generation) return;
      state.scanned += 1;
      for (const clip of clips) if (clipMatches(clip, state.filter)) state.matches.push(clip);
      render(state.matches.slice(first, wanted));
    }
    render(state.matches.slice(first, wanted));
    report(state.scanned === state.candidates.length);
    updateButtons();
  }

  function updateButtons() {
    const size = state.index.pageSize;
    $("previous").disabled = state.view === 0;
    if (state.filter === null) {
      $("next").disabled = state.view + 1 >= state.index.pages.length;
    } else {
      const exhausted = state.scanned === state.candidates.length;
      $("next").disabled = exhausted && (state.view + 1) * size >= state.matches.length;
    }
  }

  function show() {
    const generation = ++state.generation;
    const shown = state.filter === null ? showAll(generation) : showFiltered(generation);
    shown.catch((error) => setStatus("Error: " + error.message, true));
  }

  function number(id) {
    const value = $(id).value.trim();
    return value === "" || Number.isNaN(Number(value)) ? null : Number(value);
  }

  function readFilter() {
    const video = $("video").value;
    const filter = {
      words: [...new Set(words($("text").value))],
      minAesthetic: number("min-aesthetic"),
      minMotion: number("min-motion"),
      video: video === "" ? null : Number(video),
    };
    const empty = !filter.words.length && filter.minAesthetic === null && filter.minMotion === null &&
      filter.video === null;
    return empty ? null : filter;
  }

  function applyFilter() {
    state.filter = readFilter();
    state.view = 0;
    state.matches = [];
    state.scanned = 0;
    state.candidates = [];
    if (state.filter !== null) {
      for (let page = 0; page < state.index.pages.length; page++) {
        if (pageMayMatch(page, state.filter)) state.candidates.push(page);
      }
    }
    show();
  }

  window.clipGallery = {
    stats: () => ({ pagesLoaded: state.pagesLoaded, cachedPages: state.cache.size }),
    page(pageNumber, clips) {
      state.pagesLoaded += 1;
      remember(pageNumber, clips);
      const entry = state.pending.get(pageNumber);
      state.pending.delete(pageNumber);
      if (entry) entry.resolve(clips);
    },
    index(index) {
      state.index = index;
      const options = document.createDocumentFragment();
      index.videos.forEach((video, position) => {
        const option = element("option", "", video);
        option.value = String(position);
        options.appendChild(option);
      });
      $("video").appendChild(options);
      $("filters").addEventListener("submit", (event) => { event.preventDefault(); applyFilter(); });
      $("clear").addEventListener("click", () => { $("filters").reset(); applyFilter(); });
      $("video").addEventListener("change", applyFilter);
      $("previous").addEventListener("click", () => { if (state.view > 0) { state.view -= 1; show(); } });
      $("next").addEventListener("click", () => { state.view += 1; show(); });
      show();
    },
  };
})();
"""
