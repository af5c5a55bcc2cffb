/*
 * Serenazgo operator console: every unit live on a Leaflet map, open incidents, nearest units
 * for a clicked point, incident creation and one-click assignment.
 *
 * Data comes from the WebSocket /api/v1/ws ({"type", "data"} messages: a snapshot first, then
 * position/status/unit/connection changes of single units, incidents, events and keepalives)
 * and from the REST API (/api/v1/area, /api/v1/dispatch/nearest, /api/v1/incidents).
 *
 * Freshness: the server sends the per-kind thresholds in the snapshot and the server time in
 * every snapshot and keepalive; the console computes each unit's freshness from its fix age
 * (corrected by the server clock offset) every few seconds, so units fade without any ping.
 *
 * Identifiers stay in English (as in the data); what the operator reads is Spanish by default, English
 * on request (LABELS and TEXT, each with its English twin; the choice is kept in localStorage).
 * Also: a unit's track replay, the supervision card (response times, coverage history chart) and
 * keyboard shortcuts for the radio operator (see "keyboard shortcuts").
 * Plain script, no build step.
 */
(function () {
  "use strict";

  // ----- labels (Spanish, and their English twin) for the English identifiers of the data ------
  const LABELS_ES = {
    kind: {
      patrol_car: "Patrullero", motorcycle: "Motorizado", bicycle: "Bicicleta",
      foot: "A pie", drone: "Dron",
    },
    status: {
      available: "Disponible", dispatched: "Despachada", en_route: "En camino",
      on_scene: "En escena", out_of_service: "Fuera de servicio",
    },
    freshness: { live: "En vivo", stale: "Desactualizada", lost: "Perdida" },
    category: {
      seguridad_ciudadana: "Seguridad ciudadana", fiscalizacion: "Fiscalización",
      obras_servicios: "Obras y servicios", defensa_civil: "Defensa civil",
      seguridad_vial: "Seguridad vial", apoyo_turista: "Apoyo al turista", otro: "Otro",
    },
    channel: {
      phone: "Teléfono", patrol: "Patrullaje", camera: "Cámara", whatsapp: "WhatsApp",
      social: "Redes sociales", other: "Otro",
    },
    priority: { 1: "1 · Muy alta", 2: "2 · Alta", 3: "3 · Media", 4: "4 · Baja", 5: "5 · Muy baja" },
    incidentStatus: {
      open: "Abierto", assigned: "Asignado", en_route: "En camino", on_scene: "En escena",
      closed: "Cerrado", cancelled: "Cancelado",
    },
    connection: {
      connecting: "Conectando…", live: "En vivo", down: "Sin conexión",
    },
    event: {
      geofence_enter: "Entró a", geofence_exit: "Salió de", unit_stale: "Señal desactualizada",
      unit_lost: "Señal perdida", unit_live: "Señal recuperada", battery_low: "Batería baja",
      unit_arrived: "Llegó al incidente", airspace_entered: "Entró a espacio restringido",
      airspace_exited: "Salió de espacio restringido",
      drone_return_required: "Debe regresar ya", drone_below_reserve: "Batería bajo la reserva",
      drone_telemetry_lost: "Telemetría perdida en vuelo", drone_altitude_exceeded: "Sobre la altura límite",
    },
    airspaceKind: {
      airport: "aeropuerto", heliport: "helipuerto", hospital: "hospital", embassy: "embajada",
      military: "zona militar", prison: "penal", event: "evento", other: "zona restringida",
    },
    unreachable: {
      inside_restricted_airspace: "Dentro de espacio aéreo restringido",
      no_route_around_restricted_airspace: "Encerrado por zonas restringidas: sin ruta",
      beyond_operating_radius: "Fuera del radio de operación de la base",
      too_far_for_one_battery: "Demasiado lejos para una batería",
    },
    dockLimit: {
      time: "por tiempo", energy: "por batería", range: "por alcance de radio", out_of_service: "fuera de servicio",
    },
    role: {
      admin: "Administrador", supervisor: "Supervisor", operator: "Operador", planner: "Planificador",
      viewer: "Observador", integration: "Integración",
    },
    flightMode: {
      on_ground: "En tierra", taking_off: "Despegando", manual: "Manual", hovering: "Suspendido",
      mission: "En misión", returning_home: "Regresando", landing: "Aterrizando",
      disconnected: "Sin enlace", other: "Otro",
    },
  };
  const LABELS_EN = {
    kind: { patrol_car: "Patrol car", motorcycle: "Motorcycle", bicycle: "Bicycle", foot: "On foot", drone: "Drone" },
    status: {
      available: "Available", dispatched: "Dispatched", en_route: "En route",
      on_scene: "On scene", out_of_service: "Out of service",
    },
    freshness: { live: "Live", stale: "Stale", lost: "Lost" },
    category: {
      seguridad_ciudadana: "Public safety", fiscalizacion: "Inspection",
      obras_servicios: "Works and services", defensa_civil: "Civil defence",
      seguridad_vial: "Road safety", apoyo_turista: "Tourist assistance", otro: "Other",
    },
    channel: {
      phone: "Phone", patrol: "Patrol", camera: "Camera", whatsapp: "WhatsApp",
      social: "Social media", other: "Other",
    },
    priority: { 1: "1 · Very high", 2: "2 · High", 3: "3 · Medium", 4: "4 · Low", 5: "5 · Very low" },
    incidentStatus: {
      open: "Open", assigned: "Assigned", en_route: "En route", on_scene: "On scene",
      closed: "Closed", cancelled: "Cancelled",
    },
    connection: { connecting: "Connecting…", live: "Live", down: "Offline" },
    event: {
      geofence_enter: "Entered", geofence_exit: "Left", unit_stale: "Signal stale",
      unit_lost: "Signal lost", unit_live: "Signal back", battery_low: "Battery low",
      unit_arrived: "Arrived at the incident", airspace_entered: "Entered restricted airspace",
      airspace_exited: "Left restricted airspace",
      drone_return_required: "Must return now", drone_below_reserve: "Battery below the reserve",
      drone_telemetry_lost: "Telemetry lost in flight", drone_altitude_exceeded: "Above the altitude limit",
    },
    airspaceKind: {
      airport: "airport", heliport: "heliport", hospital: "hospital", embassy: "embassy",
      military: "military zone", prison: "prison", event: "event", other: "restricted zone",
    },
    unreachable: {
      inside_restricted_airspace: "Inside restricted airspace",
      no_route_around_restricted_airspace: "Enclosed by restricted zones: no route",
      beyond_operating_radius: "Beyond the dock's operating radius",
      too_far_for_one_battery: "Too far for one battery",
    },
    dockLimit: {
      time: "by time", energy: "by battery", range: "by radio range", out_of_service: "out of service",
    },
    role: {
      admin: "Administrator", supervisor: "Supervisor", operator: "Operator", planner: "Planner",
      viewer: "Viewer", integration: "Integration",
    },
    flightMode: {
      on_ground: "On the ground", taking_off: "Taking off", manual: "Manual", hovering: "Hovering",
      mission: "On mission", returning_home: "Returning", landing: "Landing",
      disconnected: "No link", other: "Other",
    },
  };

  // The operator's language (ES by default, EN on request), remembered in this browser.
  const LANG_KEY = "serenazgo.lang";
  const LANGS = { es: LABELS_ES, en: LABELS_EN };
  let lang = "es";
  try {
    const saved = localStorage.getItem(LANG_KEY);
    if (saved && LANGS[saved]) lang = saved;
  } catch (_) { /* storage blocked: Spanish */ }
  const LABELS = {}; // the tables of the current language (the same object throughout, for the tests' handle)
  const useLabels = () => { for (const [k, v] of Object.entries(LANGS[lang])) LABELS[k] = v; };
  useLabels();
  const label = (table, key) => (LABELS[table] && LABELS[table][key]) || String(key);
  const LOCALE = () => (lang === "en" ? "en-GB" : "es-PE");

  // Texts of the page itself (index.html marks them with data-i18n / data-i18n-aria / data-i18n-placeholder)
  // and of the newer cards; a function takes the figures it shows.
  const TEXT = {
    es: {
      "subtitle": "Central de operaciones", "lang": "Idioma",
      "login.title": "Iniciar sesión", "login.user": "Usuario", "login.password": "Contraseña",
      "login.submit": "Entrar", "login.wrong": "Usuario o contraseña incorrectos.",
      "login.disabled": "Esta cuenta está desactivada: consulte a un administrador.",
      "login.tooMany": (s) => `Demasiados intentos fallidos: vuelva a intentar en ${s} s.`,
      "login.give": "Escriba su usuario y su contraseña.", "login.expired": "Su sesión terminó: vuelva a iniciar sesión.",
      "login.unreachable": (why) => `No se pudo contactar al servidor (${why}); se reintenta.`,
      "login.cookie": "El navegador no guardó la sesión: abra la consola por HTTPS (o pida al administrador SERENAZGO_AUTH__COOKIE_SECURE=false en una red cerrada).",
      "login.failed": (why) => `No se pudo iniciar sesión: ${why}`, "login.needed": "sesión cerrada",
      "logout": "Salir", "logout.failed": "No se pudo cerrar la sesión", "user.aria": "Sesión",
      "notice.close": "Cerrar aviso", "denied": (why) => `El servidor no lo permite: ${why}`,
      "dispatch.title": "Punto seleccionado", "dispatch.nearest": "Unidades más cercanas",
      "form.title": "Nuevo incidente aquí", "form.category": "Categoría", "form.channel": "Canal",
      "form.priority": "Prioridad", "form.description": "Descripción", "form.create": "Crear incidente",
      "form.note": "«Asignar» también lo crea", "coverage.title": "Cobertura", "coverage.none": "sin cobertura",
      "coverage.target": "Tiempo objetivo", "coverage.layer": "Capa", "sorties.title": "Salidas de drones",
      "units.title": "Unidades", "units.showLost": "Mostrar perdidas", "units.search": "Buscar indicativo…",
      "units.searchAria": "Buscar unidad", "incidents.title": "Incidentes abiertos", "events.title": "Eventos recientes",
      "lostCount": (n) => `Perdidas ${n}`, "track.open": "Recorrido",
      "dispatch.close": "Cerrar punto seleccionado", "form.aria": "Nuevo incidente",
      "layer.ground": "Terrestre", "layer.drones": "Drones", "layer.combined": "Combinada",
      "map.aria": "Mapa de unidades: haga clic en un punto para ver las unidades más cercanas",
      "panel.aria": "Panel de operaciones", "units.counts": "Unidades por estado", "units.list": "Lista de unidades",
      "legend": "Leyenda", "assign": "Asignar", "assigned": "Asignada", "nearest.unit": "Unidad",
      "nearest.distance": "Distancia", "nearest.eta": "Llegada",
      "shortcuts.title": "Atajos de teclado", "shortcuts.close": "Cerrar atajos",
      "key.n": "Nuevo incidente en el último clic (o el centro del mapa)",
      "key.a": "Asignar la unidad elegida (la primera del ranking si no eligió otra)",
      "key.digits": "Elegir la unidad n.º 1–5 del ranking", "key.esc": "Cerrar paneles",
      "key.slash": "Buscar una unidad", "key.help": "Mostrar u ocultar esta lista",
      "key.note": "Los atajos no actúan mientras escribe en un campo.",
      "conn.retry": (s) => `Sin conexión · reintento en ${s} s`, "ago": (n, unit) => `hace ${n} ${unit}`,
      "popup.kind": "Tipo", "popup.status": "Estado", "popup.signal": "Señal", "popup.sector": "Sector",
      "popup.fix": "Última posición", "popup.never": "nunca", "popup.speed": "Velocidad", "popup.battery": "Batería",
      "popup.connection": "Conexión", "popup.disconnected": "desconectada",
      "nearest.searching": "Buscando unidades…", "nearest.failed": "No se pudo consultar",
      "nearest.none": "No hay unidades disponibles cerca.", "incident": "Incidente", "priority": "prioridad",
      "form.created": (id) => `Incidente #${id} creado`, "form.createFailed": "No se pudo crear el incidente",
      "form.assigned": (who, id) => `${who} asignada al incidente #${id}`, "form.assignFailed": "No se pudo asignar",
      "drone.drone": "Dron", "drone.loading": "cargando…", "drone.noMargin": "sin margen", "drone.mode": "Modo",
      "drone.docked": "en base", "drone.battery": "Batería (dron)", "drone.altitude": "Altura",
      "drone.altValue": (m) => `${m} m s/despegue`, "drone.overLimit": (m) => `sobre el límite de ${m} m`,
      "drone.returnNow": "¡regresar ya!", "drone.margin": "Margen de regreso", "drone.home": "A su base",
      "event.margin": "margen", "tiles.offline": "Mapa base no disponible (sin Internet)",
      "coverage.heading": (m) => `Cobertura ${m} min`,
      "coverage.units": (n) => `${n} ${n === 1 ? "unidad disponible" : "unidades disponibles"}`,
      "coverage.docks": (n) => `${n} ${n === 1 ? "base de drones" : "bases de drones"}`,
      "coverage.cameras": (n) => `${n} cámaras`, "coverage.layerOf": (layer) => `Capa ${layer}`,
      "coverage.failed": (why) => `Cobertura no disponible: ${why}. Se reintenta en 30 s.`,
      "coverage.dock": (name, km, why) => `Base de drones ${name} · alcance ${km} km (${why})`,
      "sorties.aria": "Planificar salidas de drones", "sorties.dock": "Base", "sorties.altitude": "Altura (m)",
      "sorties.plan": "Planificar", "sorties.clear": "Borrar plan", "sorties.noDocks": "Sin bases de drones",
      "sorties.noDocksConfigured": "No hay bases de drones configuradas.",
      "sorties.docksFailed": "No se pudieron cargar las bases de drones",
      "sorties.target": (layer, m) => `Brechas de la capa ${layer} a ${m} min (tiempo objetivo de Cobertura)`,
      "sorties.chooseDock": "Elija una base de drones en servicio.",
      "sorties.giveAltitude": "Indique la altura en metros (mayor que 0).",
      "sorties.maxAltitude": (m) => `La altura máxima es ${m} m (límite de vuelo).`,
      "sorties.routeTip": (n, dist, flight, pct, targets) =>
        `Salida ${n} · ${dist} · ${flight} · batería ${pct} % · ${targets} objetivos`,
      "sorties.targetTitle": (s, n) => `Salida ${s}, objetivo ${n}`,
      "sorties.targetTip": (s, n) => `Salida ${s} · objetivo ${n}`,
      "sorties.dockTip": (name) => `Base ${name}: despegue y regreso`,
      "sorties.download": (n) => `Descargar la salida ${n} para QGroundControl`,
      "sorties.charges": (n) => `${n} cargas`,
      "sorties.from": (dock, alt, n) => `Desde ${dock} · ${alt} m sobre el despegue · ${n} ${n === 1 ? "salida" : "salidas"}`,
      "sorties.sortie": "Salida", "sorties.flight": "Vuelo", "sorties.targets": "Objetivos",
      "sorties.unreachable": (n) =>
        `${n} ${n === 1 ? "objetivo inalcanzable" : "objetivos inalcanzables"} (cruces grises en el mapa)`,
      "sorties.noGaps": "No hay brechas que cubrir con esta capa y tiempo objetivo.",
      "sorties.planning": "Planificando…", "sorties.kml": "Descargar KML (todas)", "sorties.noAnswer": "sin respuesta del servidor",
      "sorties.planFailed": "No se pudo planificar", "sorties.downloaded": (name) => `Descargado ${name}`,
      "sorties.downloadFailed": "No se pudo descargar", "airspace.layer": "Espacio aéreo restringido",
      "airspace.band": (band) => `${band} sobre el suelo`, "airspace.from": (m) => `desde ${m} m`,
      "track.title": "Recorrido", "track.close": "Cerrar recorrido", "track.window": "Ventana de tiempo",
      "track.custom": "Otro", "track.from": "Desde", "track.to": "Hasta", "track.show": "Ver",
      "track.play": "Reproducir", "track.pause": "Pausa", "track.speed": "Velocidad",
      "track.slider": "Momento del recorrido", "track.loading": "Cargando recorrido…",
      "track.empty": "Sin posiciones en esa ventana.", "track.count": (n) => `${n} ${n === 1 ? "posición" : "posiciones"}`,
      "track.failed": "No se pudo cargar el recorrido", "track.bad": "respuesta inesperada",
      "track.badWindow": "Indique un inicio anterior al fin.",
      "supervision.title": "Supervisión", "supervision.close": "Cerrar supervisión", "supervision.period": "Periodo",
      "supervision.24h": "Últimas 24 h", "supervision.7d": "Últimos 7 días", "supervision.30d": "Últimos 30 días",
      "supervision.byCategory": "Tiempo de respuesta por categoría",
      "supervision.byChannel": "Tiempo de respuesta por canal", "supervision.coverage": "Historial de cobertura",
      "stats.category": "Categoría", "stats.channel": "Canal", "stats.count": "N", "stats.p50": "p50",
      "stats.p90": "p90", "stats.mean": "Media", "stats.total": "Total", "stats.none": "Sin incidentes en el periodo.",
      "stats.failed": "Estadísticas no disponibles", "history.failed": "Historial no disponible",
      "history.none": "Sin muestras en el periodo.",
      "history.note": (layer, minutes, n, worst) => `Capa ${layer} a ${minutes} min · ${n} muestras`
        + (worst ? ` · peores horas en rojo (${worst})` : ""),
      "history.worst": (when, pct) => `Peor hora ${when}: ${pct} % cubierto en promedio`,
    },
    en: {
      "subtitle": "Operations centre", "lang": "Language",
      "login.title": "Log in", "login.user": "User name", "login.password": "Password",
      "login.submit": "Log in", "login.wrong": "Wrong user name or password.",
      "login.disabled": "This account is disabled: ask an administrator.",
      "login.tooMany": (s) => `Too many failed attempts: try again in ${s} s.`,
      "login.give": "Enter your user name and password.", "login.expired": "Your session has ended: log in again.",
      "login.unreachable": (why) => `Could not reach the server (${why}); retrying.`,
      "login.cookie": "The browser did not keep the session: open the console over HTTPS (or ask the administrator for SERENAZGO_AUTH__COOKIE_SECURE=false on a closed network).",
      "login.failed": (why) => `Could not log in: ${why}`, "login.needed": "logged out",
      "logout": "Log out", "logout.failed": "Could not log out", "user.aria": "Session",
      "notice.close": "Close notice", "denied": (why) => `The server does not allow it: ${why}`,
      "dispatch.title": "Selected point", "dispatch.nearest": "Nearest units",
      "form.title": "New incident here", "form.category": "Category", "form.channel": "Channel",
      "form.priority": "Priority", "form.description": "Description", "form.create": "Create incident",
      "form.note": "«Assign» creates it too", "coverage.title": "Coverage", "coverage.none": "not covered",
      "coverage.target": "Target time", "coverage.layer": "Layer", "sorties.title": "Drone sorties",
      "units.title": "Units", "units.showLost": "Show lost", "units.search": "Search call sign…",
      "units.searchAria": "Search unit", "incidents.title": "Open incidents", "events.title": "Recent events",
      "lostCount": (n) => `Lost ${n}`, "track.open": "Track",
      "dispatch.close": "Close selected point", "form.aria": "New incident",
      "layer.ground": "Ground", "layer.drones": "Drones", "layer.combined": "Combined",
      "map.aria": "Units map: click a point to see the nearest units",
      "panel.aria": "Operations panel", "units.counts": "Units by status", "units.list": "Units list",
      "legend": "Legend", "assign": "Assign", "assigned": "Assigned", "nearest.unit": "Unit",
      "nearest.distance": "Distance", "nearest.eta": "Arrival",
      "shortcuts.title": "Keyboard shortcuts", "shortcuts.close": "Close shortcuts",
      "key.n": "New incident at the last click (or the map centre)",
      "key.a": "Assign the chosen unit (the top-ranked one unless you chose another)",
      "key.digits": "Choose unit no. 1–5 of the ranking", "key.esc": "Close panels",
      "key.slash": "Search a unit", "key.help": "Show or hide this list",
      "key.note": "Shortcuts do nothing while you type in a field.",
      "conn.retry": (s) => `Offline · retrying in ${s} s`, "ago": (n, unit) => `${n} ${unit} ago`,
      "popup.kind": "Kind", "popup.status": "Status", "popup.signal": "Signal", "popup.sector": "Sector",
      "popup.fix": "Last fix", "popup.never": "never", "popup.speed": "Speed", "popup.battery": "Battery",
      "popup.connection": "Connection", "popup.disconnected": "disconnected",
      "nearest.searching": "Looking for units…", "nearest.failed": "Could not ask",
      "nearest.none": "No available unit nearby.", "incident": "Incident", "priority": "priority",
      "form.created": (id) => `Incident #${id} created`, "form.createFailed": "Could not create the incident",
      "form.assigned": (who, id) => `${who} assigned to incident #${id}`, "form.assignFailed": "Could not assign",
      "drone.drone": "Drone", "drone.loading": "loading…", "drone.noMargin": "no margin", "drone.mode": "Mode",
      "drone.docked": "docked", "drone.battery": "Battery (drone)", "drone.altitude": "Altitude",
      "drone.altValue": (m) => `${m} m above take-off`, "drone.overLimit": (m) => `above the ${m} m limit`,
      "drone.returnNow": "return now!", "drone.margin": "Return margin", "drone.home": "To its dock",
      "event.margin": "margin", "tiles.offline": "Base map unavailable (no Internet)",
      "coverage.heading": (m) => `Coverage ${m} min`,
      "coverage.units": (n) => `${n} ${n === 1 ? "available unit" : "available units"}`,
      "coverage.docks": (n) => `${n} ${n === 1 ? "drone dock" : "drone docks"}`,
      "coverage.cameras": (n) => `${n} cameras`, "coverage.layerOf": (layer) => `${layer} layer`,
      "coverage.failed": (why) => `Coverage unavailable: ${why}. Retrying in 30 s.`,
      "coverage.dock": (name, km, why) => `Drone dock ${name} · reach ${km} km (${why})`,
      "sorties.aria": "Plan drone sorties", "sorties.dock": "Dock", "sorties.altitude": "Altitude (m)",
      "sorties.plan": "Plan", "sorties.clear": "Clear plan", "sorties.noDocks": "No drone docks",
      "sorties.noDocksConfigured": "No drone docks are configured.",
      "sorties.docksFailed": "Could not load the drone docks",
      "sorties.target": (layer, m) => `Gaps of the ${layer} layer at ${m} min (the Coverage target time)`,
      "sorties.chooseDock": "Choose a drone dock in service.",
      "sorties.giveAltitude": "Give the altitude in metres (above 0).",
      "sorties.maxAltitude": (m) => `The highest altitude is ${m} m (flight limit).`,
      "sorties.routeTip": (n, dist, flight, pct, targets) =>
        `Sortie ${n} · ${dist} · ${flight} · battery ${pct} % · ${targets} targets`,
      "sorties.targetTitle": (s, n) => `Sortie ${s}, target ${n}`,
      "sorties.targetTip": (s, n) => `Sortie ${s} · target ${n}`,
      "sorties.dockTip": (name) => `Dock ${name}: take-off and return`,
      "sorties.download": (n) => `Download sortie ${n} for QGroundControl`,
      "sorties.charges": (n) => `${n} charges`,
      "sorties.from": (dock, alt, n) => `From ${dock} · ${alt} m above take-off · ${n} ${n === 1 ? "sortie" : "sorties"}`,
      "sorties.sortie": "Sortie", "sorties.flight": "Flight", "sorties.targets": "Targets",
      "sorties.unreachable": (n) => `${n} ${n === 1 ? "unreachable target" : "unreachable targets"} (grey crosses on the map)`,
      "sorties.noGaps": "No gaps to cover with this layer and target time.",
      "sorties.planning": "Planning…", "sorties.kml": "Download KML (all)", "sorties.noAnswer": "no answer from the server",
      "sorties.planFailed": "Could not plan", "sorties.downloaded": (name) => `Downloaded ${name}`,
      "sorties.downloadFailed": "Could not download", "airspace.layer": "Restricted airspace",
      "airspace.band": (band) => `${band} above ground`, "airspace.from": (m) => `from ${m} m`,
      "track.title": "Track", "track.close": "Close track", "track.window": "Time window",
      "track.custom": "Other", "track.from": "From", "track.to": "To", "track.show": "Show",
      "track.play": "Play", "track.pause": "Pause", "track.speed": "Speed",
      "track.slider": "Moment of the track", "track.loading": "Loading track…",
      "track.empty": "No fixes in that window.", "track.count": (n) => `${n} ${n === 1 ? "fix" : "fixes"}`,
      "track.failed": "Could not load the track", "track.bad": "unexpected answer",
      "track.badWindow": "Give a start before the end.",
      "supervision.title": "Supervision", "supervision.close": "Close supervision", "supervision.period": "Period",
      "supervision.24h": "Last 24 h", "supervision.7d": "Last 7 days", "supervision.30d": "Last 30 days",
      "supervision.byCategory": "Response time by category",
      "supervision.byChannel": "Response time by channel", "supervision.coverage": "Coverage history",
      "stats.category": "Category", "stats.channel": "Channel", "stats.count": "N", "stats.p50": "p50",
      "stats.p90": "p90", "stats.mean": "Mean", "stats.total": "Total", "stats.none": "No incidents in the period.",
      "stats.failed": "Statistics unavailable", "history.failed": "History unavailable",
      "history.none": "No samples in the period.",
      "history.note": (layer, minutes, n, worst) => `Layer ${layer} at ${minutes} min · ${n} samples`
        + (worst ? ` · worst hours in red (${worst})` : ""),
      "history.worst": (when, pct) => `Worst hour ${when}: ${pct} % covered on average`,
    },
  };
  const tr = (key, ...args) => {
    const v = TEXT[lang][key] ?? TEXT.es[key] ?? key;
    return typeof v === "function" ? v(...args) : v;
  };

  const STATUS_ORDER = ["available", "dispatched", "en_route", "on_scene", "out_of_service"];
  const STATUS_COLOUR = {
    available: "#1f9d55", dispatched: "#e08a00", en_route: "#d9480f",
    on_scene: "#c92a2a", out_of_service: "#6c757d",
  };
  const KIND_COLOUR = {
    patrol_car: "#1d4e89", motorcycle: "#6f42c1", bicycle: "#0b7a75", foot: "#2f7ed8", drone: "#343a40",
  };
  const CLOSED_INCIDENT = new Set(["closed", "cancelled"]);
  const MIRAFLORES = [-12.1211, -77.0297];
  const NEAREST_K = 5;
  const FRESHNESS_EVERY_MS = 2000;
  const LIST_EVERY_MS = 1000;
  const DRONES_EVERY_MS = 5000;

  // ----- state ------------------------------------------------------------------------------
  const state = {
    units: new Map(), // unit_id -> {feature, marker, iconKey, freshness}
    incidents: new Map(), // incident id -> {incident, marker}
    thresholds: {}, // kind -> {stale_after_s, lost_after_s}
    clockOffsetMs: 0, // server time - local time
    keepaliveS: 15,
    connection: "connecting",
    pick: null, // {lat, lon, marker, incident, seq, chosen: index of the ranked unit «A» assigns}
    lastClick: null, // [lat, lon] of the operator's last click on the map
    listDirty: true,
    fitted: false,
    snapshots: 0,
    drones: new Map(), // unit_id -> GET /api/v1/drones entry (battery, altitude, return margin)
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  };

  // ----- session: who is logged in, and what the role may do ----------------------------------
  // The session is an HttpOnly cookie the page never sees, and the password lives only in the login
  // form until it is sent: nothing secret is in storage scripts can read. What a role may do is the
  // server's decision (each route's x-roles in the OpenAPI document, enforced on every call); CAN
  // mirrors the routes this console calls so that it does not offer what the server would refuse
  // (tests/console/test_console_login.py keeps the two equal).
  const CAN = {
    report: ["admin", "integration", "operator", "supervisor"], // POST /api/v1/incidents
    dispatch: ["admin", "operator", "supervisor"], // POST /api/v1/incidents/{incident_id}/assign
    plan: ["admin", "planner", "supervisor"], // POST /api/v1/drones/sorties/plan
  };
  const session = { user: null, last: null, started: false, expiryTimer: null };
  const can = (what) => session.user !== null && (CAN[what] || []).includes(session.user.role);
  const SAME_ORIGIN = { credentials: "same-origin" };

  // Every API call of the console. A 401 means the session is gone (expired, revoked, logged out
  // elsewhere): back to the login screen. A 403 is shown in the server's own words; the caller still
  // reports its own failure where it happened.
  async function api(url, options = {}) {
    if (session.user === null) throw new Error(tr("login.needed"));
    const r = await fetch(url, { ...options, ...SAME_ORIGIN });
    if (r.status === 401) sessionLost();
    else if (r.status === 403) showNotice(tr("denied", await errorText(r.clone())));
    return r;
  }

  function showNotice(text) {
    $("notice-text").textContent = text;
    $("notice").hidden = false;
  }
  function hideNotice() { $("notice").hidden = true; }

  // ----- map --------------------------------------------------------------------------------
  const map = L.map("map", { zoomControl: true, zoomSnap: 0.5 }).setView(MIRAFLORES, 14);
  const tiles = L.tileLayer("https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
    maxZoom: 19,
    attribution: '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a>',
  }).addTo(map);
  // Offline, tiles fail: the page keeps working on the district boundaries and says so.
  const offlineNote = L.control({ position: "bottomleft" });
  offlineNote.onAdd = () => el("div", { class: "tiles-offline" }, tr("tiles.offline"));
  let tileErrors = 0;
  tiles.on("tileerror", () => {
    tileErrors += 1;
    if (tileErrors === 1) offlineNote.addTo(map);
  });
  tiles.on("tileload", () => {
    if (tileErrors) { tileErrors = 0; offlineNote.remove(); }
  });

  const unitLayer = L.layerGroup().addTo(map);
  const incidentLayer = L.layerGroup().addTo(map);

  // The district boundaries, once logged in.
  const loadArea = () => api("/api/v1/area")
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
    .then((area) => {
      const layer = L.geoJSON(area, {
        interactive: false,
        style: { color: "#4a6076", weight: 1.2, fillColor: "#9fb3c8", fillOpacity: 0.06 },
        onEachFeature: (feature, polygon) => {
          // District names orient the operator when the background tiles are missing.
          const name = feature.properties && (feature.properties.district || feature.properties.name);
          if (name) {
            polygon.bindTooltip(String(name), { permanent: true, direction: "center", className: "district-label" });
          }
        },
      }).addTo(map);
      layer.bringToBack();
      // Not animated: the area and the first snapshot arrive together after a login, and a zoom
      // animation still running when the snapshot fits the units would end on the area's view.
      if (!state.fitted && state.units.size === 0) map.fitBounds(layer.getBounds(), { animate: false });
    })
    .catch((err) => console.warn("area boundaries unavailable:", err));

  // District names only from zoom 12 on: further out they would cover each other.
  const showDistrictNames = () => map.getContainer().classList.toggle("hide-districts", map.getZoom() < 12);
  map.on("zoomend", showDistrictNames);
  showDistrictNames();

  // ----- unit markers -----------------------------------------------------------------------
  function shapeSvg(kind, fill, ring, size, ringWidth = 3) {
    const s = size, c = s / 2, r = s / 2 - 3;
    const common = `fill="${fill}" stroke="${ring}" stroke-width="${ringWidth}"`;
    let body;
    switch (kind) {
      case "patrol_car":
        body = `<rect x="3" y="3" width="${s - 6}" height="${s - 6}" rx="2" ${common}/>`; break;
      case "motorcycle":
        body = `<polygon points="${c},2 ${s - 2},${c} ${c},${s - 2} 2,${c}" ${common}/>`; break;
      case "bicycle":
        body = `<polygon points="${c},2 ${s - 2},${s - 3} 2,${s - 3}" ${common}/>`; break;
      case "drone": {
        const pts = [];
        for (let i = 0; i < 6; i++) {
          const a = Math.PI / 3 * i - Math.PI / 2;
          pts.push(`${(c + r * Math.cos(a)).toFixed(1)},${(c + r * Math.sin(a)).toFixed(1)}`);
        }
        body = `<polygon points="${pts.join(" ")}" ${common}/>`; break;
      }
      default:
        body = `<circle cx="${c}" cy="${c}" r="${r}" ${common}/>`;
    }
    return `<svg width="${s}" height="${s}" viewBox="0 0 ${s} ${s}" aria-hidden="true">${body}</svg>`;
  }

  function unitIcon(props, freshness) {
    const kind = props.kind;
    const fill = freshness === "lost" ? "#adb5bd" : (KIND_COLOUR[kind] || "#555");
    const ring = STATUS_COLOUR[props.status] || "#555";
    const size = kind === "foot" ? 16 : 20;
    // Available is the usual case: a thin ring; any other status gets a thick one that stands out.
    const ringWidth = props.status === "available" ? 2 : 4;
    return L.divIcon({
      className: `unit-icon ${freshness}`,
      html: shapeSvg(kind, fill, ring, size, ringWidth),
      iconSize: [size, size],
      iconAnchor: [size / 2, size / 2],
    });
  }

  function unitPopup(props, freshness) {
    const rows = [
      [tr("popup.kind"), label("kind", props.kind)],
      [tr("popup.status"), label("status", props.status)],
      [tr("popup.signal"), label("freshness", freshness)],
      [tr("popup.sector"), props.sector || "—"],
      [tr("popup.fix"), props.fix_time ? formatAge(fixAgeS(props)) : tr("popup.never")],
      [tr("popup.speed"), props.speed == null ? "—" : `${Math.round(props.speed * 3.6)} km/h`],
      [tr("popup.battery"), props.battery == null ? "—" : `${Math.round(props.battery)} %`],
    ];
    if (props.connected === false) rows.push([tr("popup.connection"), tr("popup.disconnected")]);
    if (props.kind === "drone") rows.push(...droneRows(state.drones.get(props.unit_id)));
    const body = rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("");
    return `<strong>${escapeHtml(props.callsign || props.unit_id)}</strong>`
      + ` <span class="muted">${escapeHtml(props.unit_id)}</span><table>${body}</table>`
      + `<button type="button" class="track-open" data-unit-id="${escapeHtml(props.unit_id)}">`
      + `${escapeHtml(tr("track.open"))}</button>`;
  }

  // ----- drones: battery, altitude and return-home margin from GET /api/v1/drones -------------
  function formatMargin(s) {
    const a = Math.abs(Math.round(s));
    const text = `${Math.floor(a / 60)}:${String(a % 60).padStart(2, "0")} min`;
    return s < 0 ? `−${text} (${tr("drone.noMargin")})` : text;
  }

  function droneRows(d) {
    if (!d) return [[tr("drone.drone"), tr("drone.loading")]];
    const t = d.telemetry || {};
    const e = d.endurance || {};
    const rows = [];
    if (t.flight_mode) {
      rows.push([tr("drone.mode"), label("flightMode", t.flight_mode) + (t.docked ? ` (${tr("drone.docked")})` : "")]);
    }
    rows.push([tr("drone.battery"), t.battery_pct == null ? "—" : `${Math.round(t.battery_pct)} %`]);
    let alt = t.alt_takeoff_m == null ? "—" : tr("drone.altValue", Math.round(t.alt_takeoff_m));
    if (d.altitude_exceeded) alt += ` · ${tr("drone.overLimit", Math.round(d.limits.altitude_m))}`;
    rows.push([tr("drone.altitude"), alt]);
    let margin = e.return_margin_s == null ? "—" : formatMargin(e.return_margin_s);
    if (d.return_required) margin += ` · ${tr("drone.returnNow")}`;
    rows.push([tr("drone.margin"), margin]);
    if (e.distance_home_m != null) rows.push([tr("drone.home"), `${(e.distance_home_m / 1000).toFixed(1)} km`]);
    return rows;
  }

  let dronesBusy = false;
  async function refreshDrones() {
    if (dronesBusy || session.user === null) return;
    let any = false;
    for (const entry of state.units.values()) if (entry.feature.properties.kind === "drone") { any = true; break; }
    if (!any) return;
    dronesBusy = true;
    try {
      const r = await api("/api/v1/drones");
      if (!r.ok) return;
      const body = await r.json();
      state.drones = new Map(body.drones.map((d) => [d.unit_id, d]));
      for (const [id, entry] of state.units) {
        const popup = entry.marker && entry.marker.isPopupOpen() && entry.marker.getPopup();
        if (popup && state.drones.has(id)) popup.update();  // the content function runs again
      }
    } catch (err) {
      console.warn("drones:", err);
    } finally {
      dronesBusy = false;
    }
  }

  function fixAgeS(props) {
    if (!props.fix_time) return Infinity;
    const now = Date.now() + state.clockOffsetMs;
    return Math.max(0, (now - Date.parse(props.fix_time)) / 1000);
  }

  function freshnessOf(props) {
    const t = state.thresholds[props.kind];
    if (!props.fix_time) return "lost";
    if (!t) return props.freshness || "live";
    const age = fixAgeS(props);
    if (age < t.stale_after_s) return "live";
    if (age < t.lost_after_s) return "stale";
    return "lost";
  }

  function showLost() { return $("show-lost").checked; }

  function applyUnit(feature) {
    const props = feature.properties;
    const id = props.unit_id;
    let entry = state.units.get(id);
    if (entry && entry.feature.properties.fix_time && props.fix_time
        && Date.parse(props.fix_time) < Date.parse(entry.feature.properties.fix_time)) {
      // An older fix (a message overtaken by the snapshot): keep the position, take the rest.
      feature = { ...feature, geometry: entry.feature.geometry,
        properties: { ...props, fix_time: entry.feature.properties.fix_time } };
    }
    if (!entry) {
      entry = { feature, marker: null, iconKey: "", freshness: "" };
      state.units.set(id, entry);
    } else {
      entry.feature = feature;
    }
    renderUnit(entry);
    state.listDirty = true;
    scheduleUnitPanel();
  }

  // Counts and list follow changes within a fifth of a second, one redraw for a whole burst.
  let panelTimer = null;
  function scheduleUnitPanel() {
    if (panelTimer !== null) return;
    panelTimer = setTimeout(() => {
      panelTimer = null;
      if (!$("unit-list").contains(document.activeElement)) renderUnitPanel();
    }, 200);
  }

  function renderUnit(entry) {
    const props = entry.feature.properties;
    const geom = entry.feature.geometry;
    const freshness = freshnessOf(props);
    entry.freshness = freshness;
    const visible = geom && (freshness !== "lost" || showLost());
    if (!visible) {
      if (entry.marker) { unitLayer.removeLayer(entry.marker); entry.marker = null; entry.iconKey = ""; }
      return;
    }
    const latlng = [geom.coordinates[1], geom.coordinates[0]];
    const key = `${props.kind}|${props.status}|${freshness}`;
    if (!entry.marker) {
      entry.marker = L.marker(latlng, {
        icon: unitIcon(props, freshness),
        keyboard: true,
        title: props.callsign || props.unit_id,
        alt: `${props.callsign || props.unit_id}: ${label("kind", props.kind)}, ${label("status", props.status)}`,
      });
      entry.marker.bindTooltip(props.callsign || props.unit_id, { direction: "top", offset: [0, -8], className: "unit-tip" });
      entry.marker.bindPopup(() => unitPopup(entry.feature.properties, entry.freshness));
      if (props.kind === "drone") entry.marker.on("popupopen", refreshDrones);
      entry.marker.addTo(unitLayer);
      entry.iconKey = key;
    } else {
      entry.marker.setLatLng(latlng);
      if (entry.iconKey !== key) {
        entry.marker.setIcon(unitIcon(props, freshness));
        entry.iconKey = key;
      }
    }
    const node = entry.marker.getElement();
    if (node) {
      // For tests and assistive tools: what the marker shows, in the data's own identifiers.
      node.dataset.unitId = props.unit_id;
      node.dataset.status = props.status;
      node.dataset.freshness = freshness;
      node.setAttribute("aria-label", `${props.callsign || props.unit_id}: ${label("status", props.status)}`);
    }
  }

  function refreshFreshness() {
    let changed = false;
    for (const entry of state.units.values()) {
      const f = freshnessOf(entry.feature.properties);
      if (f !== entry.freshness || (f === "lost" && !showLost() && entry.marker)) {
        renderUnit(entry);
        changed = true;
      }
    }
    if (changed) state.listDirty = true;
  }

  // ----- side panel: units ------------------------------------------------------------------
  function renderUnitPanel() {
    if (!state.listDirty) return;
    state.listDirty = false;
    const counts = Object.fromEntries(STATUS_ORDER.map((s) => [s, 0]));
    let lost = 0;
    for (const entry of state.units.values()) {
      const p = entry.feature.properties;
      counts[p.status] = (counts[p.status] || 0) + 1;
      if (entry.freshness === "lost") lost += 1;
    }
    $("unit-total").textContent = String(state.units.size);
    const chips = STATUS_ORDER.map((s) => el("li", {
      style: `background:${STATUS_COLOUR[s]}`, "data-status": s,
    }, `${label("status", s)} ${counts[s]}`));
    chips.push(el("li", { class: "lost", "data-freshness": "lost" }, tr("lostCount", lost)));
    $("status-counts").replaceChildren(...chips);

    const filter = $("unit-filter").value.trim().toLowerCase();
    const rows = [];
    const entries = [...state.units.values()].sort((a, b) =>
      (a.feature.properties.callsign || a.feature.properties.unit_id)
        .localeCompare(b.feature.properties.callsign || b.feature.properties.unit_id, "es", { numeric: true }));
    for (const entry of entries) {
      const p = entry.feature.properties;
      const name = p.callsign || p.unit_id;
      if (filter && !name.toLowerCase().includes(filter) && !p.unit_id.toLowerCase().includes(filter)) continue;
      if (rows.length >= 500) break; // a metropolis' fleet: the search narrows it down
      rows.push(el("li", {
        class: entry.freshness, tabindex: "0", "data-unit-id": p.unit_id,
        "aria-label": `${name}, ${label("kind", p.kind)}, ${label("status", p.status)}, ${label("freshness", entry.freshness)}`,
        onclick: () => focusUnit(p.unit_id),
        onkeydown: (ev) => { if (ev.key === "Enter" && ev.target === ev.currentTarget) focusUnit(p.unit_id); },
      },
      el("span", { class: "dot", style: `background:${STATUS_COLOUR[p.status] || "#555"}` }),
      el("span", { class: "callsign" }, name),
      el("span", {}, `${label("kind", p.kind)} · ${label("status", p.status)}`),
      el("span", { class: "age" }, p.fix_time ? formatAge(fixAgeS(p)) : "—"),
      el("button", {
        type: "button", class: "track-open", "data-unit-id": p.unit_id, title: tr("track.open"),
        "aria-label": `${tr("track.open")} ${name}`,
        onclick: (ev) => { ev.stopPropagation(); openTrack(p.unit_id); },
      }, "↝")));
    }
    $("unit-list").replaceChildren(...rows);
  }

  function focusUnit(id) {
    const entry = state.units.get(id);
    if (!entry || !entry.feature.geometry) return;
    const [lon, lat] = entry.feature.geometry.coordinates;
    map.setView([lat, lon], Math.max(map.getZoom(), 16));
    if (entry.marker) entry.marker.openPopup();
  }

  // ----- incidents --------------------------------------------------------------------------
  const incidentId = (inc) => inc.incident_id ?? inc.id;

  function incidentIcon(inc) {
    const colour = (inc.priority || 3) <= 2 ? "#c92a2a" : "#e08a00";
    return L.divIcon({
      className: "incident-icon",
      html: `<svg width="22" height="22" viewBox="0 0 22 22" aria-hidden="true">`
        + `<polygon points="11,1 21,20 1,20" fill="${colour}" stroke="#fff" stroke-width="1.5"/>`
        + `<text x="11" y="17" text-anchor="middle" font-size="12" font-weight="700" fill="#fff">!</text></svg>`,
      iconSize: [22, 22],
      iconAnchor: [11, 20],
    });
  }

  function applyIncident(inc) {
    const id = incidentId(inc);
    if (id === undefined || id === null) return;
    const old = state.incidents.get(id);
    if (old) incidentLayer.removeLayer(old.marker);
    if (CLOSED_INCIDENT.has(inc.status)) {
      state.incidents.delete(id);
    } else {
      const marker = L.marker([inc.lat, inc.lon], { icon: incidentIcon(inc), title: `${tr("incident")} ${id}`, zIndexOffset: 500 });
      marker.bindPopup(() => `<strong>${escapeHtml(tr("incident"))} ${escapeHtml(id)}</strong><br>`
        + `${escapeHtml(label("category", inc.category))} · ${escapeHtml(tr("priority"))} ${escapeHtml(inc.priority)}<br>`
        + `${escapeHtml(label("incidentStatus", inc.status))}<br>${escapeHtml(inc.description || "")}`);
      marker.addTo(incidentLayer);
      state.incidents.set(id, { incident: inc, marker });
    }
    if (state.pick && state.pick.incident && incidentId(state.pick.incident) === id) {
      state.pick.incident = inc;
      showPickIncident();
    }
    renderIncidentPanel();
  }

  // An incident chosen in the list: the map goes there and its ranked units are offered for it.
  function selectIncident(inc) {
    map.setView([inc.lat, inc.lon], Math.max(map.getZoom(), 16));
    pickPoint(inc.lat, inc.lon, inc);
    renderIncidentPanel();
  }

  function renderIncidentPanel() {
    const items = [...state.incidents.values()].map((x) => x.incident)
      .sort((a, b) => (a.priority || 3) - (b.priority || 3) || String(b.created_at).localeCompare(String(a.created_at)));
    $("incident-total").textContent = String(items.length);
    $("incident-list").replaceChildren(...items.map((inc) => el("li", {
      tabindex: "0", "data-incident-id": String(incidentId(inc)),
      class: state.pick && state.pick.incident && incidentId(state.pick.incident) === incidentId(inc) ? "selected" : "",
      onclick: () => selectIncident(inc),
      onkeydown: (ev) => { if (ev.key === "Enter") selectIncident(inc); },
    },
    el("span", { class: `prio prio-${inc.priority}` }, `P${inc.priority ?? "?"}`),
    `#${incidentId(inc)} ${label("category", inc.category)} · ${label("incidentStatus", inc.status)}`,
    inc.description ? el("div", { class: "muted" }, inc.description) : null)));
  }

  // ----- events -----------------------------------------------------------------------------
  function applyEvent(ev) {
    const unit = ev.unit_id ? state.units.get(ev.unit_id) : null;
    const who = unit ? (unit.feature.properties.callsign || ev.unit_id) : (ev.unit_id || "");
    const when = ev.ts ? new Date(ev.ts).toLocaleTimeString(LOCALE(), { hour12: false }) : "";
    const detail = ev.detail || {};
    let what = label("event", ev.type || "evento");
    if (ev.geofence_id) what += ` ${detail.geofence_name || detail.name || ev.geofence_id}`;
    else if (detail.zone_id) what += ` ${detail.name || detail.zone_id}`;
    if (ev.incident_id) what += ` #${ev.incident_id}`;
    if (ev.type === "battery_low" && detail.battery != null) what += ` (${Math.round(detail.battery)} %)`;
    if (ev.type === "drone_return_required" && detail.margin_s != null) what += ` (${tr("event.margin")} ${formatMargin(detail.margin_s)})`;
    if (ev.type === "drone_altitude_exceeded" && detail.alt_takeoff_m != null) what += ` (${Math.round(detail.alt_takeoff_m)} m)`;
    const item = el("li", { "data-event-type": ev.type || "" }, el("strong", {}, who), ` ${what} `,
      el("span", { class: "muted" }, when));
    const list = $("event-list");
    list.prepend(item);
    while (list.children.length > 30) list.lastChild.remove();
  }

  // ----- a clicked point: nearest units, new incident, assignment ---------------------------
  function fillSelect(id, table, fallback) {
    const select = $(id);
    select.replaceChildren(...Object.entries(LABELS[table]).map(([value, text]) => el("option", { value }, text)));
    select.value = fallback;
  }
  fillSelect("f-category", "category", "seguridad_ciudadana");
  fillSelect("f-channel", "channel", "phone");
  fillSelect("f-priority", "priority", "3");

  const pickIcon = L.divIcon({
    className: "pick-icon",
    html: '<svg width="24" height="24" viewBox="0 0 24 24" aria-hidden="true"><circle cx="12" cy="12" r="9" '
      + 'fill="none" stroke="#1f6fd1" stroke-width="3"/><circle cx="12" cy="12" r="2.5" fill="#1f6fd1"/></svg>',
    iconSize: [24, 24],
    iconAnchor: [12, 12],
  });

  map.on("click", (ev) => {
    state.lastClick = [ev.latlng.lat, ev.latlng.lng]; // where «N» opens a new incident
    pickPoint(ev.latlng.lat, ev.latlng.lng);
  });
  $("dispatch-close").addEventListener("click", clearPick);

  const pickLayer = L.layerGroup().addTo(map); // the clicked point and lines to its ranked units

  function clearPick() {
    pickLayer.clearLayers();
    state.pick = null;
    $("dispatch").hidden = true;
  }

  // A point to send units to; with ``incident`` (an open one, chosen in the list) «Asignar» sends them there.
  async function pickPoint(lat, lon, incident = null) {
    pickLayer.clearLayers();
    const marker = L.marker([lat, lon], { icon: pickIcon, interactive: false, keyboard: false }).addTo(pickLayer);
    state.pick = { lat, lon, marker, incident, seq: (state.pick ? state.pick.seq : 0) + 1, chosen: 0 };
    const seq = state.pick.seq;
    $("dispatch").hidden = false;
    $("dispatch-where").textContent = `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
    $("dispatch-incident").hidden = true;
    $("create-incident").disabled = false;
    if (incident) showPickIncident();
    setFormMessage("", "");
    $("nearest").replaceChildren(el("p", { class: "muted" }, tr("nearest.searching")));
    try {
      const r = await api(`/api/v1/dispatch/nearest?lat=${lat}&lon=${lon}&k=${NEAREST_K}`);
      if (!r.ok) throw new Error(await errorText(r));
      const body = await r.json();
      if (!state.pick || state.pick.seq !== seq) return; // another click came meanwhile
      renderNearest(body.units || []);
    } catch (err) {
      if (state.pick && state.pick.seq === seq) {
        $("nearest").replaceChildren(el("p", { class: "form-message error" }, `${tr("nearest.failed")}: ${err.message}`));
      }
    }
  }

  function renderNearest(candidates) {
    for (const c of candidates) {
      L.polyline([[state.pick.lat, state.pick.lon], [c.lat, c.lon]], {
        color: "#1f6fd1", weight: 1.5, dashArray: "4 4", opacity: 0.8, interactive: false,
      }).addTo(pickLayer);
    }
    if (!candidates.length) {
      $("nearest").replaceChildren(el("p", { class: "muted" }, tr("nearest.none")));
      return;
    }
    const rows = candidates.map((c, i) => el("tr", {
      "data-unit-id": c.unit_id, class: i === state.pick.chosen ? "chosen" : "",
      "aria-selected": String(i === state.pick.chosen),
    },
      el("td", {}, String(i + 1)),
      el("td", {}, el("strong", {}, c.callsign || c.unit_id), el("div", { class: "muted" }, label("kind", c.kind))),
      el("td", { class: "num" }, formatDistance(c.distance_m)),
      el("td", { class: "num" }, formatDuration(c.eta_s)),
      // Only for a role that may dispatch (the server refuses the others anyway).
      can("dispatch") ? el("td", {}, el("button", {
        type: "button", class: "assign", "data-unit-id": c.unit_id,
        "aria-label": `${tr("assign")} ${c.callsign || c.unit_id} (${formatDuration(c.eta_s)})`,
        onclick: (ev) => assign(c, ev.currentTarget),
      }, tr("assign"))) : null));
    $("nearest").replaceChildren(el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, tr("nearest.unit")), el("th", {}, tr("nearest.distance")),
        el("th", {}, tr("nearest.eta")), can("dispatch") ? el("th", {}, el("span", { class: "muted" }, "")) : null)),
      el("tbody", {}, ...rows)));
  }

  function incidentBody() {
    return {
      lat: state.pick.lat,
      lon: state.pick.lon,
      category: $("f-category").value,
      channel: $("f-channel").value,
      priority: Number($("f-priority").value),
      description: $("f-description").value.trim(),
    };
  }

  async function ensureIncident() {
    if (state.pick.incident) return state.pick.incident;
    const r = await api("/api/v1/incidents", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(incidentBody()),
    });
    if (!r.ok) throw new Error(await errorText(r));
    const inc = await r.json();
    state.pick.incident = inc;
    applyIncident(inc);
    showPickIncident();
    return inc;
  }

  function showPickIncident() {
    const inc = state.pick && state.pick.incident;
    if (!inc) return;
    const ref = $("dispatch-incident");
    ref.hidden = false;
    ref.textContent = `${tr("incident")} #${incidentId(inc)} · ${label("incidentStatus", inc.status)}`;
    $("create-incident").disabled = true;
  }

  $("incident-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!state.pick) return;
    try {
      const inc = await ensureIncident();
      setFormMessage(tr("form.created", incidentId(inc)), "ok");
    } catch (err) {
      setFormMessage(`${tr("form.createFailed")}: ${err.message}`, "error");
    }
  });

  async function assign(candidate, button) {
    if (!state.pick) return;
    const pick = state.pick;
    for (const b of document.querySelectorAll("#nearest button.assign")) b.disabled = true;
    try {
      const inc = await ensureIncident();
      const r = await api(`/api/v1/incidents/${encodeURIComponent(incidentId(inc))}/assign`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ unit_id: candidate.unit_id }), // the server records the logged-in user
      });
      if (!r.ok) throw new Error(await errorText(r));
      const body = await r.json().catch(() => ({}));
      if (body && (body.incident_id !== undefined || body.id !== undefined) && body.lat !== undefined) {
        applyIncident(body);
      }
      if (pick === state.pick) {
        setFormMessage(tr("form.assigned", candidate.callsign || candidate.unit_id, incidentId(inc)), "ok");
        button.textContent = tr("assigned");
      }
    } catch (err) {
      setFormMessage(`${tr("form.assignFailed")}: ${err.message}`, "error");
    } finally {
      for (const b of document.querySelectorAll("#nearest button.assign")) {
        if (b !== button || b.textContent !== tr("assigned")) b.disabled = false;
      }
    }
  }

  function setFormMessage(text, kind) {
    const node = $("form-message");
    node.textContent = text;
    node.className = `form-message ${kind}`;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      return JSON.stringify(body.detail || body);
    } catch (_) {
      return `HTTP ${response.status}`;
    }
  }

  // ----- WebSocket with reconnection ---------------------------------------------------------
  let socket = null;
  let attempts = 0;
  let lastMessageAt = 0;
  let reconnectTimer = null;

  function setConnection(kind, text) {
    state.connection = kind;
    const node = $("conn");
    node.className = `conn conn-${kind === "live" ? "live" : kind === "down" ? "down" : "connecting"}`;
    node.textContent = text || label("connection", kind);
  }

  function connect() {
    reconnectTimer = null;
    if (session.user === null || socket !== null) return;
    setConnection("connecting");
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws`;
    const ws = new WebSocket(url);
    socket = ws;
    ws.onmessage = (ev) => {
      lastMessageAt = Date.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      handle(msg);
    };
    ws.onclose = async (ev) => {
      if (socket !== ws) return;
      socket = null;
      // A handshake refused for want of a session looks like any lost connection: ask the server.
      if (await sessionEnded()) { sessionLost(); return; }
      if (session.user !== null) scheduleReconnect(ev.reason);
    };
    ws.onerror = () => { /* onclose follows and reconnects */ };
  }

  function scheduleReconnect(reason) {
    attempts += 1;
    // Jittered exponential backoff (0.5 s … 30 s), so a restarted server is not hit by every console at once.
    const delay = Math.min(30000, 500 * 2 ** Math.min(attempts - 1, 6)) * (0.5 + Math.random() / 2);
    const seconds = Math.ceil(delay / 1000);
    setConnection("down", tr("conn.retry", seconds));
    if (reason) console.warn("live feed closed:", reason);
    reconnectTimer = setTimeout(connect, delay);
  }

  // A connection that went silent (no keepalive) is dead even if the browser has not noticed.
  setInterval(() => {
    if (socket && state.connection === "live" && Date.now() - lastMessageAt > 3 * state.keepaliveS * 1000) {
      const ws = socket;
      socket = null;
      ws.close();
      scheduleReconnect("no keepalive");
    }
  }, 1000);

  function syncClock(serverTime) {
    const t = Date.parse(serverTime);
    if (!Number.isNaN(t)) state.clockOffsetMs = t - Date.now();
  }

  function handle(msg) {
    const data = msg.data;
    switch (msg.type) {
      case "snapshot": return applySnapshot(data);
      case "position":
      case "status":
      case "unit":
      case "connection":
        return applyUnit(data);
      case "incident": return applyIncident(data);
      case "event": return applyEvent(data);
      case "keepalive": return syncClock(data.server_time);
      default: return undefined;
    }
  }

  function applySnapshot(data) {
    attempts = 0;
    state.snapshots += 1;
    state.thresholds = data.freshness_thresholds || {};
    state.keepaliveS = data.keepalive_s || 15;
    syncClock(data.server_time);
    // The snapshot is the whole truth: units and incidents not in it are gone.
    unitLayer.clearLayers();
    state.units.clear();
    for (const feature of (data.units && data.units.features) || []) applyUnit(feature);
    incidentLayer.clearLayers();
    state.incidents.clear();
    for (const inc of data.incidents || []) applyIncident(inc);
    renderIncidentPanel();
    setConnection("live");
    if (!state.fitted) state.fitted = fitUnits();
    state.listDirty = true;
    renderUnitPanel();
  }

  // Shows every unit that is not lost; false when there is none to show.
  function fitUnits() {
    const points = [...state.units.values()].filter((e) => e.feature.geometry && e.freshness !== "lost")
      .map((e) => [e.feature.geometry.coordinates[1], e.feature.geometry.coordinates[0]]);
    if (!points.length) return false;
    map.fitBounds(L.latLngBounds(points).pad(0.05), { maxZoom: 16, animate: false });
    return true;
  }

  // ----- formatting ---------------------------------------------------------------------------
  function formatDistance(m) {
    if (m == null) return "—";
    return m < 1000 ? `${Math.round(m)} m` : `${(m / 1000).toFixed(1)} km`;
  }
  function formatDuration(s) {
    if (s == null || !Number.isFinite(s)) return "—";
    const total = Math.round(s);
    const min = Math.floor(total / 60);
    return min ? `${min} min ${String(total % 60).padStart(2, "0")} s` : `${total} s`;
  }
  function formatAge(s) {
    if (!Number.isFinite(s)) return "—";
    if (s < 60) return tr("ago", Math.round(s), "s");
    if (s < 3600) return tr("ago", Math.round(s / 60), "min");
    return tr("ago", Math.round(s / 3600), "h");
  }
  function escapeHtml(value) {
    return String(value ?? "").replace(/[&<>"']/g, (ch) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[ch]);
  }

  // ----- coverage: where no available unit can arrive within the target time -----------------------
  // GET /api/v1/coverage draws its gap regions over the map and says the covered share of the area.
  // Any failure (no coverage service, timeout, a bad answer) clears the layer and says so in the
  // card; the rest of the console never depends on it.
  const COVERAGE_EVERY_MS = 30000;
  const COVERAGE_TIMEOUT_MS = 20000;
  const gapLayer = L.geoJSON(null, {
    interactive: false, // a click on a gap still picks the point under it
    style: { className: "coverage-gap", color: "#c92a2a", weight: 1, fillColor: "#e03131", fillOpacity: 0.3 },
  }).addTo(map);
  // Drone docks of the drone and combined layers: a marker and the disc they reach within the target.
  const dockLayer = L.layerGroup().addTo(map);
  const coverage = { timer: null, seq: 0 };

  function coverageOn() { return $("coverage-on").checked; }

  function setCoverageState(kind) { $("coverage").dataset.state = kind; }

  // Rounded, but never "100 %" while a gap is drawn nor "0 %" while something is covered.
  function coveragePercent(ratio) {
    const pct = Math.round(ratio * 100);
    if (pct === 100 && ratio < 1) return 99;
    if (pct === 0 && ratio > 0) return 1;
    return pct;
  }

  function drawDocks(docks) {
    dockLayer.clearLayers();
    for (const d of Array.isArray(docks) ? docks : []) {
      if (!Number.isFinite(d.lat) || !Number.isFinite(d.lon)) continue;
      const reach = Number(d.reach_m);
      if (d.in_service && reach > 0) {
        L.circle([d.lat, d.lon], {
          radius: reach, interactive: false, className: "coverage-dock-reach",
          color: "#1864ab", weight: 1, dashArray: "4 4", fill: false,
        }).addTo(dockLayer);
      }
      const why = label("dockLimit", d.limit);
      L.circleMarker([d.lat, d.lon], {
        radius: 6, className: `coverage-dock${d.in_service ? "" : " out"}`,
        color: "#1864ab", weight: 2, fillColor: d.in_service ? "#ffd43b" : "#adb5bd", fillOpacity: 1,
      }).bindTooltip(escapeHtml(tr("coverage.dock", d.name, (reach / 1000).toFixed(1), why)))
        .addTo(dockLayer);
    }
  }

  async function refreshCoverage() {
    clearTimeout(coverage.timer);
    coverage.timer = null;
    const seq = ++coverage.seq;
    if (!coverageOn()) return;
    const minutes = $("coverage-minutes").value;
    const layer = $("coverage-layer").value;
    const title = tr("coverage.heading", minutes);
    setCoverageState("loading");
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), COVERAGE_TIMEOUT_MS);
    try {
      const query = new URLSearchParams({ minutes, layer });
      const r = await api(`/api/v1/coverage?${query}`, { signal: abort.signal });
      if (!r.ok) throw new Error(await errorText(r));
      const body = await r.json();
      if (seq !== coverage.seq) return; // switched off or another choice meanwhile
      const ratio = Number(body.covered_area_ratio);
      if (!Number.isFinite(ratio) || !body.gaps) throw new Error("respuesta inesperada");
      gapLayer.clearLayers();
      gapLayer.addData(body.gaps);
      const docks = (body.model && Array.isArray(body.model.docks)) ? body.model.docks : [];
      drawDocks(docks);
      if (layer !== "ground") fillSortieDocks(docks); // the same docks the planner flies from
      $("coverage-ratio").textContent = `${title}: ${coveragePercent(ratio)} %`;
      const units = tr("coverage.units", body.units);
      const at = body.at ? new Date(body.at).toLocaleTimeString(LOCALE(), { hour12: false }) : "";
      const extra = [];
      if (docks.length) extra.push(tr("coverage.docks", docks.length));
      const cams = body.model && body.model.viewsheds;
      if (cams && cams.included) extra.push(tr("coverage.cameras", cams.cameras));
      const parts = [tr("coverage.layerOf", tr(`layer.${layer}`).toLowerCase()), units, ...extra, at];
      $("coverage-detail").textContent = parts.join(" · ");
      $("coverage").dataset.docks = String(docks.length);
      $("coverage-note").hidden = true;
      $("coverage").dataset.ratio = String(ratio);
      $("coverage").dataset.gapCells = String(body.gap_cells);
      setCoverageState("ok");
    } catch (err) {
      if (seq !== coverage.seq) return;
      gapLayer.clearLayers();
      dockLayer.clearLayers();
      $("coverage-ratio").textContent = `${title}: —`;
      $("coverage-detail").textContent = "";
      const why = err.name === "AbortError" ? "sin respuesta" : err.message;
      $("coverage-note").textContent = tr("coverage.failed", why);
      $("coverage-note").hidden = false;
      delete $("coverage").dataset.ratio;
      setCoverageState("error");
    } finally {
      clearTimeout(timeout);
      if (seq === coverage.seq && coverageOn()) coverage.timer = setTimeout(refreshCoverage, COVERAGE_EVERY_MS);
    }
  }

  function toggleCoverage() {
    $("coverage-body").hidden = !coverageOn();
    if (coverageOn()) {
      refreshCoverage();
    } else {
      coverage.seq += 1; // an answer still on its way is dropped
      clearTimeout(coverage.timer);
      coverage.timer = null;
      gapLayer.clearLayers();
      dockLayer.clearLayers();
      setCoverageState("off");
    }
  }
  $("coverage-on").addEventListener("change", toggleCoverage);
  $("coverage-minutes").addEventListener("change", refreshCoverage);
  $("coverage-layer").addEventListener("change", refreshCoverage);

  // ----- restricted airspace: zones drones must not enter (GET /api/v1/airspace) -------------------
  // Red hatched footprints with a tooltip: name, kind and the altitude band (m above ground). Clicks
  // go through to the map (a point inside a zone can still be picked). Reloaded now and then: zones
  // change rarely. A failure leaves the last drawing and logs it; nothing else depends on it.
  const AIRSPACE_EVERY_MS = 60000;
  const airspaceLayer = L.geoJSON(null, {
    style: { className: "airspace-zone", color: "#c92a2a", weight: 2, dashArray: "6 3", fillColor: "#c92a2a", fillOpacity: 0.12 },
    bubblingMouseEvents: true,
    onEachFeature: (feature, polygon) => {
      const p = feature.properties || {};
      const floor = Number(p.floor_m) || 0;
      const band = p.ceiling_m == null ? tr("airspace.from", floor) : `${floor}–${p.ceiling_m} m`;
      polygon.bindTooltip(
        `<strong>${escapeHtml(p.name || feature.id)}</strong><br>${escapeHtml(label("airspaceKind", p.kind))} · ` +
        `${escapeHtml(tr("airspace.band", band))}`, { sticky: true, className: "airspace-tooltip" });
    },
  }).addTo(map);
  const airspace = { zones: 0, loaded: false };

  async function refreshAirspace() {
    try {
      const r = await api("/api/v1/airspace");
      if (!r.ok) throw new Error(await errorText(r));
      const body = await r.json();
      airspaceLayer.clearLayers();
      airspaceLayer.addData(body);
      airspace.zones = (body.features || []).length;
      airspace.loaded = true;
      map.getContainer().dataset.airspaceZones = String(airspace.zones);
    } catch (err) {
      console.warn("restricted airspace unavailable:", err);
    }
  }
  let airspaceControl = L.control.layers(null, { [tr("airspace.layer")]: airspaceLayer }, { position: "topright" }).addTo(map);
  setInterval(() => { if (session.user !== null) refreshAirspace(); }, AIRSPACE_EVERY_MS);

  // ----- drone sorties: tours from a dock over today's blind spots (POST /api/v1/drones/sorties/plan) ------
  // The planner picks a dock (the coverage docks), the gaps of the drone or combined layer at the coverage
  // card's target time, and a cruise altitude. Each sortie is drawn as a route in its own colour with its
  // targets numbered in flight order, the dock, and the targets no sortie reaches as grey crosses (the
  // tooltip says why); a summary lists each sortie's figures. The downloads (QGroundControl .plan, KML)
  // send the drawn plan's own targets back, so the file is the plan on the map even when the gaps moved
  // since. Every failure is shown in the card with the API's own words; nothing else depends on it.
  const SORTIE_COLOURS = ["#1864ab", "#e8590c", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5c940d", "#a61e4d"];
  const SORTIE_TIMEOUT_MS = 60000; // a plan takes a second or two; a loaded server gets more
  const sortieLayer = L.featureGroup().addTo(map);
  const sorties = {
    plan: null, // the API's answer (format json) now drawn
    request: null, // the body that planned it (without format)
    routes: [], // a polyline per sortie, in sortie order
    seq: 0,
    docks: [], // coverage model.docks
    altitudeLimitM: null, // GET /api/v1/drones limits.altitude_m
  };
  const sortieColour = (i) => SORTIE_COLOURS[i % SORTIE_COLOURS.length];

  function sortiesOn() { return $("sorties-on").checked; }
  function setSortieState(kind) { $("sorties").dataset.state = kind; }
  function setSortieMessage(text, kind) {
    const node = $("sortie-message");
    node.textContent = text;
    node.className = `form-message wide ${kind}`;
  }

  function fillSortieDocks(docks) {
    const select = $("sortie-dock");
    // Coverage refreshes every 30 s: never swap the options under a planner choosing one.
    if (!Array.isArray(docks) || (document.activeElement === select && select.options.length)) return;
    const chosen = select.value;
    sorties.docks = docks;
    const options = docks.map((d) => el("option", { value: d.id, disabled: !d.in_service },
      d.in_service ? d.name : `${d.name} (${label("dockLimit", "out_of_service")})`));
    if (!options.length) options.push(el("option", { value: "", disabled: true }, tr("sorties.noDocks")));
    select.replaceChildren(...options);
    const usable = docks.filter((d) => d.in_service);
    select.value = usable.some((d) => d.id === chosen) ? chosen : (usable.length ? usable[0].id : "");
    $("sorties").dataset.docks = String(docks.length);
  }

  async function loadSortieDocks() {
    try {
      const query = new URLSearchParams({ minutes: $("coverage-minutes").value, layer: "drones" });
      const r = await api(`/api/v1/coverage?${query}`);
      if (!r.ok) throw new Error(await errorText(r));
      const body = await r.json();
      fillSortieDocks((body.model && Array.isArray(body.model.docks)) ? body.model.docks : []);
      if (!sorties.docks.length) setSortieMessage(tr("sorties.noDocksConfigured"), "error");
    } catch (err) {
      setSortieMessage(`${tr("sorties.docksFailed")}: ${err.message}`, "error");
    }
  }

  // The altitude limit bounds the input; unknown, the API still refuses a plan above it (and says so).
  async function loadAltitudeLimit() {
    try {
      const r = await api("/api/v1/drones");
      if (!r.ok) return;
      const body = await r.json();
      const limit = Number(body.limits && body.limits.altitude_m);
      if (!Number.isFinite(limit) || limit <= 0) return;
      sorties.altitudeLimitM = limit;
      const input = $("sortie-altitude");
      input.max = String(limit);
      if (Number(input.value) > limit) input.value = String(limit);
    } catch (err) {
      console.warn("drone limits:", err);
    }
  }

  function showSortieTarget() {
    const layer = $("sortie-layer").value;
    $("sortie-target-note").textContent =
      tr("sorties.target", tr(`layer.${layer}`).toLowerCase(), $("coverage-minutes").value);
  }

  // What to plan, from the card; an Error in Spanish when the planner must fix something first.
  function sortieRequest() {
    const dock = $("sortie-dock").value;
    if (!dock) throw new Error(tr("sorties.chooseDock"));
    const raw = $("sortie-altitude").value.trim();
    const altitude = Number(raw);
    if (!raw || !Number.isFinite(altitude) || altitude <= 0) throw new Error(tr("sorties.giveAltitude"));
    const limit = sorties.altitudeLimitM;
    if (limit !== null && altitude > limit) throw new Error(tr("sorties.maxAltitude", limit));
    return {
      dock_id: dock, targets: "gaps", minutes: Number($("coverage-minutes").value),
      layer: $("sortie-layer").value, altitude_m: altitude,
    };
  }

  async function postPlan(body, signal) {
    const r = await api("/api/v1/drones/sorties/plan", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
    });
    if (!r.ok) throw new Error(await errorText(r));
    return r;
  }

  const km = (m) => `${(m / 1000).toFixed(1)} km`;
  const flightMin = (s) => `${(s / 60).toFixed(1)} min`;

  function numberIcon(n, colour) {
    return L.divIcon({
      className: "sortie-waypoint",
      html: `<span style="background:${colour}">${n}</span>`,
      iconSize: [18, 18],
      iconAnchor: [9, 9],
    });
  }
  const unreachableIcon = L.divIcon({
    className: "sortie-unreachable",
    html: '<svg width="14" height="14" viewBox="0 0 14 14" aria-hidden="true"><path d="M2 2L12 12M12 2L2 12" '
      + 'stroke="#fff" stroke-width="4.5"/><path d="M2 2L12 12M12 2L2 12" stroke="#6c757d" stroke-width="2.5"/></svg>',
    iconSize: [14, 14],
    iconAnchor: [7, 7],
  });

  function drawSorties(plan) {
    sortieLayer.clearLayers();
    sorties.routes = [];
    plan.sorties.forEach((s, i) => {
      const colour = sortieColour(i);
      const route = L.polyline(s.waypoints.map((w) => [w.lat, w.lon]), {
        color: colour, weight: 3, opacity: 0.9, className: "sortie-route",
      }).bindTooltip(tr("sorties.routeTip", s.sortie, km(s.distance_m), flightMin(s.flight_s),
        Math.round(s.battery_pct), s.targets.length), { sticky: true });
      route.addTo(sortieLayer);
      const path = route.getElement();
      if (path) path.dataset.sortie = String(s.sortie);
      sorties.routes.push(route);
      let n = 0;
      for (const w of s.waypoints) {
        if (w.role !== "target") continue;
        n += 1;
        const marker = L.marker([w.lat, w.lon], {
          icon: numberIcon(n, colour), keyboard: false, title: tr("sorties.targetTitle", s.sortie, n),
        }).bindTooltip(`${escapeHtml(tr("sorties.targetTip", s.sortie, n))} · ${escapeHtml(w.target)}`, { direction: "top" });
        marker.addTo(sortieLayer);
        const node = marker.getElement();
        if (node) { node.dataset.sortie = String(s.sortie); node.dataset.seq = String(n); }
      }
    });
    for (const u of plan.unreachable) {
      const marker = L.marker([u.lat, u.lon], { icon: unreachableIcon, keyboard: false, title: label("unreachable", u.reason) })
        .bindTooltip(`<strong>${escapeHtml(label("unreachable", u.reason))}</strong><br>`
          + `<span class="muted">${escapeHtml(u.detail)}</span>`, { className: "sortie-unreachable-tip" });
      marker.addTo(sortieLayer);
      const node = marker.getElement();
      if (node) node.dataset.reason = u.reason;
    }
    const d = plan.dock;
    L.circleMarker([d.lat, d.lon], {
      radius: 8, className: "sortie-dock", color: "#212529", weight: 3, fillColor: "#ffd43b", fillOpacity: 1,
    }).bindTooltip(escapeHtml(tr("sorties.dockTip", d.name))).addTo(sortieLayer);
    const bounds = sortieLayer.getBounds();
    if (bounds.isValid()) map.fitBounds(bounds.pad(0.05), { maxZoom: 16, animate: false });
  }

  function renderSortieSummary(plan) {
    const t = plan.totals;
    const battery = plan.sorties.reduce((sum, s) => sum + s.battery_pct, 0);
    const rows = plan.sorties.map((s, i) => el("tr", {
      "data-sortie": String(s.sortie), "data-distance-m": String(s.distance_m), "data-flight-s": String(s.flight_s),
      "data-battery-pct": String(s.battery_pct), "data-targets": String(s.targets.length),
    },
    el("td", {}, el("span", { class: "swatch", style: `background:${sortieColour(i)}` }), ` ${s.sortie}`),
    el("td", { class: "num" }, km(s.distance_m)),
    el("td", { class: "num" }, flightMin(s.flight_s)),
    el("td", { class: "num" }, `${Math.round(s.battery_pct)} %`),
    el("td", { class: "num" }, String(s.targets.length)),
    el("td", {}, el("button", {
      type: "button", class: "download-qgc", "data-sortie": String(s.sortie),
      "aria-label": tr("sorties.download", s.sortie),
      onclick: (ev) => downloadSortie("qgc", s.sortie, ev.currentTarget),
    }, ".plan"))));
    const total = el("tr", {
      class: "total", "data-distance-m": String(t.distance_m), "data-flight-s": String(t.flight_s),
      "data-targets": String(t.targets_covered),
    },
    el("td", {}, tr("stats.total")), el("td", { class: "num" }, km(t.distance_m)), el("td", { class: "num" }, flightMin(t.flight_s)),
    // Batteries add up to charges: what the day's plan costs the dock.
    el("td", { class: "num" }, tr("sorties.charges", (battery / 100).toFixed(1))), el("td", { class: "num" }, String(t.targets_covered)),
    el("td", {}));
    const parts = [];
    parts.push(el("p", { class: "muted" }, tr("sorties.from", plan.dock.name, plan.altitude_m, t.sorties)));
    if (plan.sorties.length) {
      parts.push(el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, tr("sorties.sortie")), el("th", { class: "num" }, tr("nearest.distance")),
          el("th", { class: "num" }, tr("sorties.flight")), el("th", { class: "num" }, tr("popup.battery")),
          el("th", { class: "num" }, tr("sorties.targets")), el("th", {}, ""))),
        el("tbody", {}, ...rows, total)));
    }
    if (t.targets_unreachable) {
      parts.push(el("p", { class: "sortie-unreachable-note", "data-unreachable": String(t.targets_unreachable) },
        tr("sorties.unreachable", t.targets_unreachable)));
    }
    if (!plan.sorties.length && !t.targets_unreachable) {
      parts.push(el("p", { class: "muted" }, tr("sorties.noGaps")));
    }
    if (plan.sorties.length) {
      parts.push(el("div", { class: "form-actions" }, el("button", {
        type: "button", id: "sortie-kml", onclick: (ev) => downloadSortie("kml", null, ev.currentTarget),
      }, tr("sorties.kml"))));
    }
    $("sortie-summary").replaceChildren(...parts);
    $("sorties").dataset.sorties = String(plan.sorties.length);
  }

  async function planSorties() {
    let request;
    try {
      request = sortieRequest();
    } catch (err) {
      setSortieMessage(err.message, "error");
      return;
    }
    clearSorties();
    const seq = sorties.seq;
    setSortieState("loading");
    setSortieMessage(tr("sorties.planning"), "");
    $("sortie-plan").disabled = true;
    const abort = new AbortController();
    const timeout = setTimeout(() => abort.abort(), SORTIE_TIMEOUT_MS);
    try {
      const r = await postPlan({ ...request, format: "json" }, abort.signal);
      const plan = await r.json();
      if (seq !== sorties.seq) return; // cleared meanwhile
      if (!plan || !Array.isArray(plan.sorties) || !Array.isArray(plan.unreachable) || !plan.totals) {
        throw new Error(tr("track.bad"));
      }
      sorties.plan = plan;
      sorties.request = request;
      drawSorties(plan);
      renderSortieSummary(plan);
      setSortieMessage("", "");
      setSortieState("ok");
    } catch (err) {
      if (seq !== sorties.seq) return;
      const why = err.name === "AbortError" ? tr("sorties.noAnswer") : err.message;
      setSortieMessage(`${tr("sorties.planFailed")}: ${why}`, "error");
      setSortieState("error");
    } finally {
      clearTimeout(timeout);
      $("sortie-plan").disabled = false;
    }
  }

  // Gap cells reach the planner in ascending H3 order; the same points in the same order plan the same
  // sorties (the planner is deterministic), so the exported file is the drawn plan.
  function cellOrder(a, b) {
    try {
      const x = BigInt(`0x${a.id}`), y = BigInt(`0x${b.id}`);
      return x < y ? -1 : x > y ? 1 : 0;
    } catch (_) {
      return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    }
  }

  function pinnedRequest() {
    const plan = sorties.plan;
    const points = [];
    for (const s of plan.sorties) {
      for (const w of s.waypoints) if (w.role === "target") points.push({ id: w.target, lat: w.lat, lon: w.lon });
    }
    for (const u of plan.unreachable) points.push({ id: u.id, lat: u.lat, lon: u.lon });
    points.sort(cellOrder);
    return { ...sorties.request, targets: points };
  }

  function attachmentName(response, fallback) {
    const m = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    return m ? m[1] : fallback;
  }

  async function downloadSortie(format, sortie, button) {
    if (!sorties.plan) return;
    const plan = sorties.plan;
    button.disabled = true;
    try {
      const body = { ...pinnedRequest(), format };
      if (sortie !== null) body.sortie = sortie;
      const r = await postPlan(body);
      const blob = await r.blob();
      if (plan !== sorties.plan) return; // cleared or planned again meanwhile
      const name = attachmentName(r, format === "kml" ? "salidas.kml" : `salida-${sortie}.plan`);
      const url = URL.createObjectURL(blob);
      const link = el("a", { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      setSortieMessage(tr("sorties.downloaded", name), "ok");
    } catch (err) {
      setSortieMessage(`${tr("sorties.downloadFailed")}: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  function clearSorties() {
    sorties.seq += 1; // a plan still on its way is dropped
    sorties.plan = null;
    sorties.request = null;
    sorties.routes = [];
    sortieLayer.clearLayers();
    $("sortie-summary").replaceChildren();
    setSortieMessage("", "");
    delete $("sorties").dataset.sorties;
    setSortieState(sortiesOn() ? "idle" : "off");
  }

  function toggleSorties() {
    $("sortie-form").hidden = !sortiesOn();
    if (sortiesOn()) {
      // Target the gaps the coverage card shows, when it shows a drone layer.
      const layer = $("coverage-layer").value;
      if (layer !== "ground") $("sortie-layer").value = layer;
      showSortieTarget();
      setSortieState("idle");
      loadSortieDocks();
      loadAltitudeLimit();
    } else {
      clearSorties();
    }
  }
  $("sorties-on").addEventListener("change", toggleSorties);
  $("sortie-form").addEventListener("submit", (ev) => { ev.preventDefault(); planSorties(); });
  $("sortie-clear").addEventListener("click", clearSorties);
  $("sortie-layer").addEventListener("change", showSortieTarget);
  $("coverage-minutes").addEventListener("change", showSortieTarget);
  $("coverage-layer").addEventListener("change", () => {
    if ($("coverage-layer").value !== "ground") $("sortie-layer").value = $("coverage-layer").value;
    showSortieTarget();
  });

  // ----- a unit's track replay (GET /api/v1/units/{id}/track?format=geojson) -------------------------
  // "Recorrido" (unit popup or list) opens the card: a window (15 min, 1 h, 4 h or chosen), the track drawn
  // as a line and a marker that replays it at ×1/×10/×60. The marker always stands on the last fix at or
  // before the replay time (no interpolation: the operator sees where the unit reported, not a guess).
  const TRACK_TICK_MS = 100;
  const trackLayer = L.featureGroup().addTo(map);
  const track = {
    unitId: null, seq: 0, url: null, start: null, end: null,
    coords: [], // [lat, lon] per fix, oldest first
    times: [], // ms since the epoch per fix
    line: null, marker: null, index: -1, t: null, timer: null,
  };

  function setTrackState(kind) { $("track").dataset.state = kind; }
  function setTrackMessage(text, kind) {
    const node = $("track-message");
    node.textContent = text;
    node.className = `form-message ${kind || ""}`;
  }

  // The last fix at or before t (ms): binary search over the ascending times; -1 before the first.
  function fixIndexAt(t) {
    let lo = 0, hi = track.times.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (track.times[mid] <= t) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  }

  function setTrackTime(t) {
    if (!track.times.length) return;
    const t0 = track.times[0], tN = track.times[track.times.length - 1];
    track.t = Math.min(Math.max(t, t0), tN);
    const i = Math.max(0, fixIndexAt(track.t));
    track.index = i;
    track.marker.setLatLng(track.coords[i]);
    $("track-slider").value = String(Math.round(track.t - t0));
    $("track-time").textContent = new Date(track.t).toLocaleTimeString(LOCALE(), { hour12: false });
    const node = track.marker.getElement();
    if (node) node.dataset.index = String(i);
  }

  function pauseTrack() {
    clearInterval(track.timer);
    track.timer = null;
    $("track-play").textContent = tr("track.play");
    $("track").dataset.playing = "false";
  }

  function playTrack() {
    if (!track.times.length) return;
    if (track.timer) { pauseTrack(); return; }
    const tN = track.times[track.times.length - 1];
    if (track.t >= tN) setTrackTime(track.times[0]); // at the end: play again from the start
    $("track-play").textContent = tr("track.pause");
    $("track").dataset.playing = "true";
    track.timer = setInterval(() => {
      setTrackTime(track.t + TRACK_TICK_MS * Number($("track-speed").value));
      if (track.t >= tN) pauseTrack();
    }, TRACK_TICK_MS);
  }

  function clearTrackDrawing() {
    pauseTrack();
    trackLayer.clearLayers();
    track.line = null;
    track.marker = null;
    track.coords = [];
    track.times = [];
    track.index = -1;
    track.t = null;
    $("track-player").hidden = true;
  }

  async function loadTrack(start, end) {
    clearTrackDrawing();
    const seq = ++track.seq;
    const unitId = track.unitId;
    track.start = start;
    track.end = end;
    const query = new URLSearchParams({ start: start.toISOString(), end: end.toISOString(), format: "geojson" });
    track.url = `/api/v1/units/${encodeURIComponent(unitId)}/track?${query}`;
    setTrackState("loading");
    setTrackMessage(tr("track.loading"), "");
    try {
      const r = await api(track.url);
      if (!r.ok) throw new Error(await errorText(r));
      const feature = await r.json();
      if (seq !== track.seq) return; // another window or unit meanwhile
      const g = feature.geometry;
      const lonlats = !g ? [] : g.type === "Point" ? [g.coordinates] : g.coordinates;
      const times = ((feature.properties || {}).coordinateProperties || {}).times || [];
      if (lonlats.length !== times.length) throw new Error(tr("track.bad"));
      if (!lonlats.length) {
        setTrackMessage(tr("track.empty"), "");
        setTrackState("empty");
        return;
      }
      track.coords = lonlats.map(([lon, lat]) => [lat, lon]);
      track.times = times.map((x) => Date.parse(x));
      track.line = L.polyline(track.coords, { color: "#7048e8", weight: 3, opacity: 0.85, className: "track-line" })
        .addTo(trackLayer);
      L.circleMarker(track.coords[0], { radius: 4, color: "#7048e8", fillColor: "#fff", fillOpacity: 1, weight: 2,
        className: "track-start", interactive: false }).addTo(trackLayer);
      track.marker = L.circleMarker(track.coords[0], { radius: 7, color: "#fff", weight: 2, fillColor: "#7048e8",
        fillOpacity: 1, className: "track-marker", interactive: false }).addTo(trackLayer);
      const slider = $("track-slider");
      slider.max = String(track.times[track.times.length - 1] - track.times[0]);
      $("track-player").hidden = false;
      setTrackTime(track.times[0]);
      const fixes = track.coords.length;
      setTrackMessage(tr("track.count", fixes), "ok");
      map.fitBounds(trackLayer.getBounds().pad(0.1), { maxZoom: 17, animate: false });
      setTrackState("ok");
    } catch (err) {
      if (seq !== track.seq) return;
      setTrackMessage(`${tr("track.failed")}: ${err.message}`, "error");
      setTrackState("error");
    }
  }

  function trackPreset(minutes) {
    for (const b of document.querySelectorAll(".track-preset")) {
      b.setAttribute("aria-pressed", String(b.dataset.minutes === String(minutes)));
    }
    if (minutes === "custom") {
      $("track-custom").hidden = false;
      const end = new Date(Date.now() + state.clockOffsetMs);
      if (!$("track-end").value) $("track-end").value = localInput(end);
      if (!$("track-start").value) $("track-start").value = localInput(new Date(end.getTime() - 3600000));
      return;
    }
    $("track-custom").hidden = true;
    const end = new Date(Date.now() + state.clockOffsetMs);
    loadTrack(new Date(end.getTime() - Number(minutes) * 60000), end);
  }

  // A Date as the value of an <input type="datetime-local"> (the browser's local time, to the second).
  function localInput(d) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:`
      + `${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function openTrack(unitId, minutes = 15) {
    const entry = state.units.get(unitId);
    track.unitId = unitId;
    $("track-unit").textContent = entry ? (entry.feature.properties.callsign || unitId) : unitId;
    $("track").hidden = false;
    $("track").dataset.unitId = unitId;
    map.closePopup();
    trackPreset(minutes);
  }

  function closeTrack() {
    track.seq += 1;
    track.unitId = null;
    clearTrackDrawing();
    $("track").hidden = true;
    setTrackState("off");
  }

  for (const b of document.querySelectorAll(".track-preset")) {
    b.addEventListener("click", () => trackPreset(b.dataset.minutes));
  }
  $("track-custom").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const start = new Date($("track-start").value), end = new Date($("track-end").value);
    if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime()) || end <= start) {
      setTrackMessage(tr("track.badWindow"), "error");
      return;
    }
    loadTrack(start, end);
  });
  $("track-close").addEventListener("click", closeTrack);
  $("track-play").addEventListener("click", playTrack);
  $("track-slider").addEventListener("input", () => {
    if (track.times.length) setTrackTime(track.times[0] + Number($("track-slider").value));
  });
  // The popup's "Recorrido" button is HTML in a popup: one listener for all of them.
  document.addEventListener("click", (ev) => {
    const button = ev.target.closest && ev.target.closest("button.track-open");
    if (button) { ev.stopPropagation(); openTrack(button.dataset.unitId); }
  });

  // ----- supervision: response times (GET /api/v1/incidents/stats) and coverage history ---------------
  // A supervisor's card: p50/p90/mean of the time from report to the first unit on scene, per category and
  // per channel, and the stored coverage of the coverage card's layer and target time as a small SVG line
  // chart (our own drawing: no chart library), its worst hours shaded red. Refreshed while open.
  const SUPERVISION_EVERY_MS = 60000;
  const CHART = { w: 340, h: 130, left: 34, right: 6, top: 6, bottom: 18 };
  const supervision = { seq: 0, timer: null, stats: null, history: null, since: null, until: null };

  function statsTable(dimension, groups) {
    const entries = Object.entries(groups || {}).sort((a, b) => b[1].count - a[1].count || a[0].localeCompare(b[0]));
    if (!entries.length) return el("p", { class: "muted" }, tr("stats.none"));
    const seconds = (v) => (v == null ? "" : String(v));
    const rows = entries.map(([key, g]) => el("tr", {
      "data-key": key, "data-count": String(g.count), "data-p50": seconds(g.response_s.p50),
      "data-p90": seconds(g.response_s.p90), "data-mean": seconds(g.response_s.mean),
    },
    el("td", {}, label(dimension, key)),
    el("td", { class: "num" }, String(g.count)),
    el("td", { class: "num" }, formatDuration(g.response_s.p50)),
    el("td", { class: "num" }, formatDuration(g.response_s.p90)),
    el("td", { class: "num" }, formatDuration(g.response_s.mean))));
    return el("table", { "data-dimension": dimension },
      el("thead", {}, el("tr", {}, el("th", {}, tr(`stats.${dimension}`)), el("th", { class: "num" }, tr("stats.count")),
        el("th", { class: "num" }, tr("stats.p50")), el("th", { class: "num" }, tr("stats.p90")),
        el("th", { class: "num" }, tr("stats.mean")))),
      el("tbody", {}, ...rows));
  }

  function renderStats() {
    const body = supervision.stats;
    if (!body) return;
    $("stats-category").replaceChildren(statsTable("category", body.by.category));
    $("stats-channel").replaceChildren(statsTable("channel", body.by.channel));
  }

  // The chart: x is time over the asked period, y the covered share of the area (0..100 %); one dot per
  // point of the answer (a sample, or an hour's average for the longer periods), worst hours as red bands.
  function coverageChart(body, since, until) {
    const c = CHART;
    const span = until - since;
    const x = (t) => (c.left + ((t - since) / span) * (c.w - c.left - c.right)).toFixed(1);
    const y = (r) => (c.top + (1 - r) * (c.h - c.top - c.bottom)).toFixed(1);
    const hourMs = body.bucket === "hour" ? 3600000 : 60000;
    const worst = (body.worst_hours || []).map((w) => [Date.parse(w.start), w]);
    const inWorst = (t) => worst.some(([s]) => t >= s && t < s + 3600000);
    const parts = [];
    for (const [s, w] of worst) {
      const pct = Math.round(w.covered_area_ratio.avg * 100);
      const when = new Date(s).toLocaleString(LOCALE(), { hour12: false, day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit" });
      parts.push(`<rect class="worst" data-start="${escapeHtml(w.start)}" x="${x(s)}" y="${c.top}" `
        + `width="${Math.max(1, x(s + 3600000) - x(s)).toFixed(1)}" height="${c.h - c.top - c.bottom}">`
        + `<title>${escapeHtml(tr("history.worst", when, pct))}</title></rect>`);
    }
    for (const r of [0, 0.5, 1]) {
      parts.push(`<line class="grid" x1="${c.left}" x2="${c.w - c.right}" y1="${y(r)}" y2="${y(r)}"/>`
        + `<text class="axis" x="${c.left - 3}" y="${Number(y(r)) + 3}" text-anchor="end">${r * 100} %</text>`);
    }
    const fmt = (t) => new Date(t).toLocaleString(LOCALE(), { hour12: false, day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit" });
    parts.push(`<text class="axis" x="${c.left}" y="${c.h - 4}">${escapeHtml(fmt(since))}</text>`
      + `<text class="axis" x="${c.w - c.right}" y="${c.h - 4}" text-anchor="end">${escapeHtml(fmt(until))}</text>`);
    const pts = body.points.map((p) => [Date.parse(p.start), p.covered_area_ratio.avg, p]);
    if (pts.length > 1) {
      parts.push(`<polyline class="coverage-line" points="${pts.map(([t, r]) => `${x(t + hourMs / 2)},${y(r)}`).join(" ")}"/>`);
    }
    for (const [t, r, p] of pts) {
      parts.push(`<circle class="sample${inWorst(t) ? " worst" : ""}" data-start="${escapeHtml(p.start)}" `
        + `data-ratio="${r}" cx="${x(t + hourMs / 2)}" cy="${y(r)}" r="1.6"/>`);
    }
    return `<svg viewBox="0 0 ${c.w} ${c.h}" width="100%" role="img" aria-label="${escapeHtml(tr("supervision.coverage"))}">`
      + `${parts.join("")}</svg>`;
  }

  async function refreshSupervision() {
    clearTimeout(supervision.timer);
    supervision.timer = null;
    if ($("supervision").hidden) return;
    const seq = ++supervision.seq;
    const hours = Number($("supervision-period").value);
    const until = Date.now() + state.clockOffsetMs;
    const since = until - hours * 3600000;
    supervision.since = since;
    supervision.until = until;
    const period = { since: new Date(since).toISOString(), until: new Date(until).toISOString() };
    $("supervision").dataset.state = "loading";
    const layer = $("coverage-layer").value, minutes = $("coverage-minutes").value;
    const history = new URLSearchParams({ ...period, layer, minutes, bucket: hours > 24 ? "hour" : "minute" });
    const [stats, hist] = await Promise.allSettled([
      api(`/api/v1/incidents/stats?${new URLSearchParams(period)}`).then(async (r) => {
        if (!r.ok) throw new Error(await errorText(r));
        return r.json();
      }),
      api(`/api/v1/coverage/history?${history}`).then(async (r) => {
        if (!r.ok) throw new Error(await errorText(r));
        return r.json();
      }),
    ]);
    if (seq !== supervision.seq) return; // closed or another period meanwhile
    if (stats.status === "fulfilled") {
      supervision.stats = stats.value;
      renderStats();
      $("supervision-message").textContent = "";
    } else {
      supervision.stats = null;
      $("stats-category").replaceChildren();
      $("stats-channel").replaceChildren();
      $("supervision-message").textContent = `${tr("stats.failed")}: ${stats.reason.message}`;
      $("supervision-message").className = "form-message error";
    }
    if (hist.status === "fulfilled") {
      const body = hist.value;
      supervision.history = body;
      $("coverage-chart").innerHTML = body.points.length ? coverageChart(body, since, until) : "";
      $("coverage-history-note").textContent = body.points.length
        ? tr("history.note", tr(`layer.${layer}`).toLowerCase(), minutes, body.points.length, body.worst_hours.length)
        : tr("history.none");
    } else {
      supervision.history = null;
      $("coverage-chart").replaceChildren();
      $("coverage-history-note").textContent = `${tr("history.failed")}: ${hist.reason.message}`;
    }
    $("supervision").dataset.state = stats.status === "fulfilled" && hist.status === "fulfilled" ? "ok" : "error";
    supervision.timer = setTimeout(refreshSupervision, SUPERVISION_EVERY_MS);
  }

  function toggleSupervision(open = $("supervision").hidden) {
    $("supervision").hidden = !open;
    $("supervision-toggle").setAttribute("aria-expanded", String(open));
    if (open) {
      refreshSupervision();
    } else {
      supervision.seq += 1;
      clearTimeout(supervision.timer);
      $("supervision").dataset.state = "off";
    }
  }
  $("supervision-toggle").addEventListener("click", () => toggleSupervision());
  $("supervision-close").addEventListener("click", () => toggleSupervision(false));
  $("supervision-period").addEventListener("change", refreshSupervision);

  // ----- keyboard shortcuts for the radio operator ----------------------------------------------------
  // N new incident (at the last click, else the map centre), 1–5 choose a ranked unit, A assign the chosen
  // one (the top-ranked by default), / search units, Esc close panels, ? this list. Never while the operator
  // types in a field (there Esc only leaves the field), and never with Ctrl/Alt/Meta (the browser's own).
  function typing(node) {
    if (!node || node === document.body) return false;
    const tag = node.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || node.isContentEditable;
  }

  function toggleShortcuts(open = $("shortcuts").hidden) {
    $("shortcuts").hidden = !open;
    $("shortcuts-toggle").setAttribute("aria-expanded", String(open));
  }

  function chooseRanked(i) {
    const rows = document.querySelectorAll("#nearest tbody tr");
    if (!can("dispatch") || !state.pick || i >= rows.length) return false;
    state.pick.chosen = i;
    rows.forEach((row, k) => {
      row.classList.toggle("chosen", k === i);
      row.setAttribute("aria-selected", String(k === i));
    });
    return true;
  }

  function assignChosen() {
    if (!can("dispatch") || !state.pick) return false;
    const button = document.querySelectorAll("#nearest tbody tr button.assign")[state.pick.chosen || 0];
    if (!button || button.disabled) return false;
    button.click();
    return true;
  }

  function newIncidentHere() {
    if (!can("report")) return false;
    const [lat, lon] = state.lastClick || [map.getCenter().lat, map.getCenter().lng];
    pickPoint(lat, lon);
    $("f-category").focus();
    return true;
  }

  function closePanels() {
    map.closePopup();
    if (!$("dispatch").hidden) clearPick();
    if (!$("track").hidden) closeTrack();
    if (!$("supervision").hidden) toggleSupervision(false);
    toggleShortcuts(false);
    return true;
  }

  const SHORTCUTS = {
    n: newIncidentHere,
    a: assignChosen,
    "/": () => { $("unit-filter").focus(); return true; },
    "?": () => { toggleShortcuts(); return true; },
    Escape: closePanels,
  };

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing || session.user === null) return;
    if (typing(ev.target)) {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    let done = false;
    if (/^[1-5]$/.test(key)) done = chooseRanked(Number(key) - 1);
    else if (SHORTCUTS[key]) done = SHORTCUTS[key]();
    if (done) ev.preventDefault(); // "/" must not land in the search box it focuses
  });
  $("shortcuts-toggle").addEventListener("click", () => toggleShortcuts());
  $("shortcuts-close").addEventListener("click", () => toggleShortcuts(false));

  // ----- language: ES (default) or EN, remembered in this browser ------------------------------------
  // Switching re-labels the page in place (static texts, selects, lists, legend, open cards); the live
  // feed and whatever the operator was doing stay as they are.
  function applyTexts() {
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = tr(node.dataset.i18n);
    for (const node of document.querySelectorAll("[data-i18n-aria]")) node.setAttribute("aria-label", tr(node.dataset.i18nAria));
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = tr(node.dataset.i18nPlaceholder);
    for (const b of document.querySelectorAll(".lang-switch button")) b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
  }

  function setLanguage(next) {
    if (!LANGS[next]) return;
    lang = next;
    try { localStorage.setItem(LANG_KEY, lang); } catch (_) { /* storage blocked: this page only */ }
    useLabels();
    applyTexts();
    for (const [id, table] of [["f-category", "category"], ["f-channel", "channel"], ["f-priority", "priority"]]) {
      fillSelect(id, table, $(id).value);
    }
    setConnection(state.connection);
    showUser();
    showLoginMessage();
    state.listDirty = true;
    renderUnitPanel();
    renderIncidentPanel();
    for (const entry of state.units.values()) { entry.iconKey = ""; renderUnit(entry); } // marker labels
    legend.remove();
    legend.addTo(map);
    if (!$("dispatch").hidden && state.pick) pickPoint(state.pick.lat, state.pick.lon, state.pick.incident);
    if (!$("supervision").hidden) refreshSupervision();
    if (coverageOn()) refreshCoverage();
    if (session.user !== null) refreshAirspace();
    airspaceControl.remove();
    airspaceControl = L.control.layers(null, { [tr("airspace.layer")]: airspaceLayer }, { position: "topright" }).addTo(map);
    if (sortiesOn()) showSortieTarget();
    if (sorties.plan) renderSortieSummary(sorties.plan); // the drawn routes keep their tooltips until the next plan
    const offline = document.querySelector(".tiles-offline");
    if (offline) offline.textContent = tr("tiles.offline");
    if (track.timer) $("track-play").textContent = tr("track.pause");
    else $("track-play").textContent = tr("track.play");
    document.dispatchEvent(new CustomEvent("serenazgo:language", { detail: lang }));
  }
  for (const b of document.querySelectorAll(".lang-switch button")) {
    b.addEventListener("click", () => setLanguage(b.dataset.lang));
  }

  // ----- login and logout ----------------------------------------------------------------------------
  // Until /api/v1/auth/me names a user the page shows only the login form (and the language switch).
  // A 401 later (an expired or revoked session, an account disabled meanwhile) or a live feed refused
  // while /me says 401 brings the form back over a hidden console; logging in again as the same user
  // resumes where the operator was, as another user reloads the page (nothing of the last user stays).
  const login = { message: null, wait: null, timer: null };

  function showLoginMessage() {
    const m = login.message;
    $("login-message").textContent = m ? tr(m.key, ...(m.args || [])) : "";
  }
  function setLoginMessage(key, ...args) {
    login.message = key ? { key, args } : null;
    showLoginMessage();
  }

  function showUser() {
    const me = session.user;
    if (me === null) return;
    $("user-name").textContent = me.display_name || me.username;
    $("user-name").title = me.username;
    $("user-role").textContent = label("role", me.role);
    $("user").dataset.username = me.username;
    $("user").dataset.role = me.role;
  }

  // Hide or show what the role may not do (the server refuses it anyway, with a 403).
  function applyRole() {
    document.body.dataset.role = session.user ? session.user.role : "";
    for (const node of document.querySelectorAll("[data-needs]")) node.hidden = !can(node.dataset.needs);
    if (!can("plan") && sortiesOn()) { $("sorties-on").checked = false; toggleSorties(); }
    if (state.pick && !$("dispatch").hidden) pickPoint(state.pick.lat, state.pick.lon, state.pick.incident);
  }

  function showConsole(on) {
    document.querySelector("main.layout").hidden = !on;
    $("session-tools").hidden = !on;
    $("login").hidden = on;
    document.body.dataset.session = on ? "in" : "out";
  }

  function showLogin(messageKey) {
    showConsole(false);
    hideNotice();
    setLoginMessage(messageKey || null);
    const user = $("login-user");
    if (!user.value && session.last) user.value = session.last.username;
    (user.value ? $("login-password") : user).focus();
  }

  function enterConsole(me) {
    if (session.last !== null && session.last.username !== me.username) {
      location.reload(); // another user at this desk: a fresh page, nothing of the last one's work
      return;
    }
    session.user = me;
    session.last = me;
    watchExpiry(me);
    $("login-password").value = "";
    setLoginMessage(null);
    showUser();
    applyRole();
    showConsole(true);
    map.invalidateSize({ animate: false }); // the map was laid out hidden
    if (!session.started) {
      session.started = true;
      loadArea();
      refreshAirspace();
    }
    connect();
    document.dispatchEvent(new CustomEvent("serenazgo:session", { detail: me }));
  }

  // An open live feed outlives its session on the server; at the session's end, ask, and if it is over
  // leave the picture for the login form (the local clock may differ: asked again a minute later).
  function watchExpiry(me) {
    clearTimeout(session.expiryTimer);
    if (!me.expires_at) return;
    const check = async () => {
      if (session.user !== me) return;
      if (await sessionEnded()) sessionLost();
      else session.expiryTimer = setTimeout(check, 60000);
    };
    const ms = Date.parse(me.expires_at) - (Date.now() + state.clockOffsetMs) + 1000;
    session.expiryTimer = setTimeout(check, Math.min(Math.max(ms, 1000), 2147483647)); // setTimeout's limit
  }

  function sessionLost() {
    if (session.user === null) return;
    session.user = null;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (socket !== null) { const ws = socket; socket = null; ws.close(); }
    setConnection("down");
    showLogin("login.expired");
  }

  // Whether the server says this browser has no session any more (a network failure is not that).
  async function sessionEnded() {
    try {
      const r = await fetch("/api/v1/auth/me", SAME_ORIGIN);
      return r.status === 401;
    } catch (_) {
      return false;
    }
  }

  function countDown(seconds) {
    clearInterval(login.timer);
    login.wait = seconds;
    $("login-submit").disabled = true;
    setLoginMessage("login.tooMany", seconds);
    login.timer = setInterval(() => {
      login.wait -= 1;
      if (login.wait > 0) { setLoginMessage("login.tooMany", login.wait); return; }
      clearInterval(login.timer);
      login.timer = null;
      $("login-submit").disabled = false;
      setLoginMessage(null);
    }, 1000);
  }

  async function submitLogin(ev) {
    ev.preventDefault();
    const username = $("login-user").value.trim();
    const password = $("login-password").value;
    if (!username || !password) { setLoginMessage("login.give"); return; }
    $("login-submit").disabled = true;
    let r;
    try {
      r = await fetch("/api/v1/auth/login", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ username, password }), ...SAME_ORIGIN,
      });
    } catch (err) {
      $("login-submit").disabled = false;
      setLoginMessage("login.failed", err.message);
      return;
    }
    $("login-password").value = ""; // the password is not kept, whatever the answer
    if (r.ok) {
      $("login-submit").disabled = false;
      // A Secure cookie over plain HTTP (other than localhost) is dropped by the browser: every
      // later call would be refused. Check it came back before entering, and say what to do.
      const check = await fetch("/api/v1/auth/me", SAME_ORIGIN).catch(() => null);
      if (check && check.status === 401) { setLoginMessage("login.cookie"); return; }
      enterConsole(await r.json());
      return;
    }
    if (r.status === 429) {
      const wait = Math.max(1, Math.ceil(Number(r.headers.get("Retry-After")) || 60));
      countDown(wait);
      return;
    }
    $("login-submit").disabled = false;
    const why = await errorText(r);
    if (r.status === 401 && /disabled/i.test(why)) setLoginMessage("login.disabled");
    else if (r.status === 401) setLoginMessage("login.wrong");
    else setLoginMessage("login.failed", why);
    $("login-password").focus();
  }
  $("login-form").addEventListener("submit", submitLogin);

  // Logging out ends the session on the server, then starts a fresh page (the login screen).
  $("logout").addEventListener("click", async () => {
    try {
      const r = await fetch("/api/v1/auth/logout", { method: "POST", ...SAME_ORIGIN });
      if (!r.ok && r.status !== 401) { showNotice(`${tr("logout.failed")}: ${await errorText(r)}`); return; }
    } catch (err) {
      showNotice(`${tr("logout.failed")}: ${err.message}`);
      return;
    }
    session.user = null;
    location.reload();
  });
  $("notice-close").addEventListener("click", hideNotice);

  // At load: the console when the cookie still names a user, else the login form.
  async function start() {
    let r;
    try {
      r = await fetch("/api/v1/auth/me", SAME_ORIGIN);
    } catch (err) {
      r = { ok: false, status: 0, statusText: err.message };
    }
    if (r.ok) { enterConsole(await r.json()); return; }
    if (r.status === 401) { showLogin(null); return; }
    // The server is not answering properly (restarting?): say so and ask again shortly.
    showConsole(false);
    setLoginMessage("login.unreachable", r.status ? `HTTP ${r.status}` : r.statusText);
    setTimeout(start, 3000);
  }

  // ----- legend, timers, start -------------------------------------------------------------------
  const legend = L.control({ position: "bottomright" });
  legend.onAdd = () => {
    const node = el("div", { class: "legend", role: "note", "aria-label": tr("legend") });
    const kinds = Object.keys(LABELS.kind).map((k) =>
      `<div>${shapeSvg(k, KIND_COLOUR[k], KIND_COLOUR[k], 16, 1)}${escapeHtml(label("kind", k))}</div>`).join("");
    const rings = STATUS_ORDER.map((s) =>
      `<div>${shapeSvg("foot", "#fff", STATUS_COLOUR[s], 16, 3)}${escapeHtml(label("status", s))}</div>`).join("");
    node.innerHTML = kinds + '<hr style="border:none;border-top:1px solid #ddd;margin:3px 0">' + rings;
    return node;
  };
  legend.addTo(map);

  $("show-lost").addEventListener("change", () => {
    for (const entry of state.units.values()) renderUnit(entry);
    state.listDirty = true;
  });
  $("unit-filter").addEventListener("input", () => { state.listDirty = true; renderUnitPanel(); });

  setInterval(refreshFreshness, FRESHNESS_EVERY_MS);
  setInterval(refreshDrones, DRONES_EVERY_MS);
  // The list shows fix ages: redraw it now and then, but never under the keyboard focus of an operator.
  let ticks = 0;
  setInterval(() => {
    ticks += 1;
    if (ticks % 5 === 0) state.listDirty = true;
    if ($("unit-list").contains(document.activeElement)) return;
    renderUnitPanel();
  }, LIST_EVERY_MS);
  setInterval(() => {
    $("clock").textContent = new Date(Date.now() + state.clockOffsetMs).toLocaleTimeString(LOCALE(), { hour12: false });
  }, 1000);

  applyTexts();
  start();

  // A read-only handle for tests and for the browser console.
  window.serenazgo = {
    state, map, pickPoint, fitUnits, refreshFreshness, refreshCoverage, refreshAirspace, refreshDrones, airspace,
    airspaceLayer, LABELS, sorties, sortieLayer, planSorties, clearSorties, loadSortieDocks,
    track, trackLayer, openTrack, closeTrack, setTrackTime, supervision, refreshSupervision, toggleSupervision,
    setLanguage, language: () => lang, selectIncident, session, CAN, can, api,
  };
})();
