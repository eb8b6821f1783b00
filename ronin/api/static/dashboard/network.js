// The network page: the nodes and peer links of GET /v1/graph drawn with sigma (WebGL), at
// the positions the server stored: nothing is laid out here. Filters and search change what
// is drawn through a reducer (no node moves); the change feed keeps the picture current,
// coalesced to one update per 500 ms.
(function () {
  "use strict";
  var ronin = window.ronin;
  var container = document.getElementById("graph");
  var summary = document.getElementById("graph-summary");
  var hint = document.getElementById("graph-hint");
  var FETCH_IDS = 100; // node ids per GET /v1/graph/nodes
  var PALETTE = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
    "#7b3294", "#1b7837", "#b2182b", "#4d4d4d", "#8c510a", "#2166ac",
  ];
  var BACKGROUND = [255, 255, 255];
  var OUTLINE = { suspect: "#b00020", unverified: "#9aa0a6" };
  var graph = new graphology.Graph({ type: "directed", allowSelfLoops: false });
  var renderer = null;
  var filters = { node_class: "", state: "", capability: "", search: "" };
  var info = (window.roninGraph = {
    nodes: 0,
    links: 0,
    firstFrameMs: null,
    readyMs: null,
    state: function (id) {
      return graph.hasNode(id) ? graph.getNodeAttribute(id, "state") : null;
    },
  });

  function classColour(name) {
    var hash = 0;
    for (var i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) >>> 0;
    return PALETTE[hash % PALETTE.length];
  }

  function dim(hex) {
    var parts = [1, 3, 5].map(function (i, k) {
      var value = parseInt(hex.slice(i, i + 2), 16);
      return Math.round(value * 0.25 + BACKGROUND[k] * 0.75);
    });
    return "rgb(" + parts.join(",") + ")";
  }

  // The attributes drawn for one node of /v1/graph.
  function attributes(node) {
    var colour = classColour(node["class"]);
    var gone = node.state === "gone";
    var fill = gone ? dim(colour) : colour;
    return {
      x: node.x,
      y: node.y,
      label: node.id,
      size: gone ? 3 : 4 + Math.min(4, Math.log2(1 + (node.services || 1))),
      color: fill,
      borderColor: OUTLINE[node.state] || fill,
      state: node.state,
      nodeClass: node["class"],
      capabilities: node.capabilities || [],
      zIndex: gone ? 0 : 1,
    };
  }

  function put(node) {
    if (graph.hasNode(node.id)) graph.mergeNodeAttributes(node.id, attributes(node));
    else graph.addNode(node.id, attributes(node));
  }

  function link(edge) {
    if (graph.hasNode(edge.source) && graph.hasNode(edge.target) && edge.source !== edge.target) {
      graph.mergeEdge(edge.source, edge.target);
    }
  }

  function shown(data) {
    if (filters.node_class && data.nodeClass !== filters.node_class) return false;
    if (filters.state && data.state !== filters.state) return false;
    if (filters.capability) {
      var wanted = filters.capability;
      if (!data.capabilities.some(function (c) { return c.indexOf(wanted) !== -1; })) return false;
    }
    return true;
  }

  function nodeReducer(id, data) {
    var out = Object.assign({}, data);
    if (!shown(data)) out.hidden = true;
    if (filters.search && id === filters.search) {
      out.highlighted = true;
      out.forceLabel = true;
      out.zIndex = 2;
    }
    return out;
  }

  function summarise() {
    var gone = 0;
    graph.forEachNode(function (id, data) {
      if (data.state === "gone") gone++;
    });
    info.nodes = graph.order;
    info.links = graph.size;
    summary.textContent =
      ronin.number(graph.order) + " nodes, " + ronin.number(graph.size) + " links, " +
      ronin.number(gone) + " gone";
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (answer) {
        if (!answer.ok) throw new Error(url + " answered " + answer.status);
        return answer.json();
      });
  }

  function draw(data) {
    data.nodes.forEach(put);
    data.links.forEach(link);
    summarise();
    renderer = new Sigma(graph, container, {
      nodeProgramClasses: {
        border: Sigma.rendering.createNodeBorderProgram({
          borders: [
            { size: { value: 0.3 }, color: { attribute: "borderColor" } },
            { size: { fill: true }, color: { attribute: "color" } },
          ],
        }),
      },
      defaultNodeType: "border",
      defaultEdgeColor: "#c3c8cf",
      defaultEdgeType: "line",
      nodeReducer: nodeReducer,
      zIndex: true,
      labelRenderedSizeThreshold: 8,
      // While the picture is dragged or zoomed, a large one drops its links and labels until
      // it stops: on a machine drawing WebGL in software that doubles the frame rate.
      hideEdgesOnMove: graph.order > 1000,
      hideLabelsOnMove: graph.order > 1000,
    });
    info.firstFrameMs = performance.now(); // the constructor draws the first frame
    info.renderer = renderer; // for bench/dashboard.py: it pans the camera
    renderer.on("clickNode", function (event) {
      location.href = ronin.nodePath(event.node);
    });
    renderer.on("enterNode", function () { container.classList.add("pointing"); });
    renderer.on("leaveNode", function () { container.classList.remove("pointing"); });
    bindControls();
    follow(data.cursor);
    requestAnimationFrame(function () {
      info.readyMs = performance.now();
      ronin.ready();
    });
  }

  function bindControls() {
    var apply = function () { if (renderer) renderer.refresh(); };
    [["graph-class", "node_class"], ["graph-state", "state"], ["graph-capability", "capability"]]
      .forEach(function (pair) {
        var input = document.getElementById(pair[0]);
        input.addEventListener("input", function () {
          filters[pair[1]] = input.value.trim();
          apply();
        });
      });
    var search = document.getElementById("graph-search");
    var options = document.getElementById("graph-ids");
    document.getElementById("graph-controls").addEventListener("submit", function (event) {
      event.preventDefault();
      find(search.value.trim());
    });
    search.addEventListener("input", function () {
      var text = search.value.trim();
      options.textContent = "";
      if (text.length < 3) return;
      var found = 0;
      graph.forEachNode(function (id) {
        if (found < 20 && id.indexOf(text) !== -1) {
          options.appendChild(ronin.el("option", null, { value: id }));
          found++;
        }
      });
      if (graph.hasNode(text)) find(text);
    });
  }

  function find(id) {
    filters.search = graph.hasNode(id) ? id : "";
    hint.textContent = "";
    if (!filters.search) {
      if (id) hint.textContent = "No node " + id + " in the picture.";
      renderer.refresh();
      return;
    }
    var at = renderer.getNodeDisplayData(id);
    if (at) renderer.getCamera().animate({ x: at.x, y: at.y, ratio: 0.15 }, { duration: 300 });
    hint.appendChild(document.createTextNode("Found " + id + ": "));
    hint.appendChild(ronin.el("a", "open its page", { href: ronin.nodePath(id) }));
    renderer.refresh();
  }

  // Live: every change names a node; those touched in a tick are fetched again (the server
  // says their state and places a new one) and drawn.
  function follow(cursor) {
    var source = new EventSource("/v1/changes/stream?since=" + encodeURIComponent(cursor));
    var again = ronin.coalesce(function (ids) {
      refetch(Array.from(new Set(ids)));
    });
    var apply = ronin.coalesce(function (ids) {
      var unique = Array.from(new Set(ids));
      refetch(unique);
      // A job writes a batch's links just after its services: ask once more for those.
      setTimeout(function () { unique.forEach(again); }, 2000);
    });
    ["service_added", "service_changed", "service_state", "service_removed"].forEach(function (type) {
      source.addEventListener(type, function (event) {
        apply(JSON.parse(event.data).node_id);
      });
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        // The cursor expired (or the node restarted): read the whole picture again.
        setTimeout(reload, 5000);
      }
    };
  }

  function refetch(ids) {
    for (var i = 0; i < ids.length; i += FETCH_IDS) {
      var chunk = ids.slice(i, i + FETCH_IDS);
      var query = chunk.map(function (id) { return "ids=" + encodeURIComponent(id); }).join("&");
      getJSON("/v1/graph/nodes?" + query).then(
        (function (asked) {
          return function (answer) {
            var got = {};
            answer.nodes.forEach(function (node) {
              got[node.id] = true;
              put(node);
            });
            asked.forEach(function (id) {
              if (!got[id] && graph.hasNode(id)) graph.dropNode(id); // no service left
            });
            answer.links.forEach(link);
            summarise();
          };
        })(chunk),
        function () {}
      );
    }
  }

  function reload() {
    getJSON("/v1/graph").then(function (data) {
      graph.clear();
      data.nodes.forEach(put);
      data.links.forEach(link);
      summarise();
      follow(data.cursor);
    }, function () { setTimeout(reload, 10000); });
  }

  document.querySelectorAll(".swatch[data-class]").forEach(function (swatch) {
    swatch.style.backgroundColor = classColour(swatch.dataset["class"]);
  });

  getJSON(container.dataset.src).then(
    function (data) {
      try {
        draw(data);
      } catch (error) {
        hint.textContent = "The picture could not be drawn (" + error.message + ").";
        ronin.ready();
      }
    },
    function (error) {
      hint.textContent = "The picture could not be loaded (" + error.message + ").";
      ronin.ready();
    }
  );
})();
