// SPDX-License-Identifier: MIT
//
// gjs tests of the extension's D-Bus client (gnome-extension/ollamaproxy@fio.ie/efficiencyClient.js)
// against the real service. Driven by tests/test_extension_client.py:
//
//   gjs -m tests/gjs/client_test.js XML_FILE SCENARIO
//
// on a private session bus (DBUS_SESSION_BUS_ADDRESS). Output is TAP-like: "ok - ..." and
// "not ok - ..." per check. When the script needs the world to change it prints
// "STEP <action> [arg]" and waits for the effect; the driver performs the action:
//   STEP stop-service | STEP start-service | STEP set-mode MODE (busctl, another client)
// Exit status 0 when every check passed.

import Gio from 'gi://Gio';
import GLib from 'gi://GLib';
import System from 'system';

import {
    INTERFACES, OllamaProxyClient, loadInterfaceXml, parseInterfaces,
} from '../../gnome-extension/ollamaproxy@fio.ie/efficiencyClient.js';

const MODE_IDS = ['performance', 'balanced', 'efficiency', 'quiet', 'ultra-efficiency', 'auto'];
const TIMEOUT_MS = 10000;

let failures = 0;
let checks = 0;

/**
 * Record one check.
 *
 * @param {boolean} condition - passed
 * @param {string} message - what was checked
 */
function check(condition, message) {
    checks++;
    print(`${condition ? 'ok' : 'not ok'} - ${message}`);
    if (!condition)
        failures++;
}

/**
 * Ask the driver to act, then carry on.
 *
 * @param {string} action - what the driver should do
 */
function step(action) {
    print(`STEP ${action}`);
}

/**
 * Resolve once `predicate(...signalArgs)` is true for an emission of `signal` on `object`
 * (or at once when `predicate()` already holds); reject after TIMEOUT_MS.
 *
 * @param {GObject.Object} object - emitter
 * @param {string} signal - signal name
 * @param {Function} predicate - condition over the signal's arguments
 * @param {string} what - for the timeout message
 * @returns {Promise<Array>} the arguments of the matching emission
 */
function waitFor(object, signal, predicate, what) {
    return new Promise((resolve, reject) => {
        const timer = GLib.timeout_add(GLib.PRIORITY_DEFAULT, TIMEOUT_MS, () => {
            object.disconnect(id);
            reject(new Error(`timed out waiting for ${what}`));
            return GLib.SOURCE_REMOVE;
        });
        const id = object.connect(signal, (...args) => {
            if (!predicate(...args))
                return;
            GLib.source_remove(timer);
            object.disconnect(id);
            resolve(args);
        });
    });
}

/**
 * Wait until `predicate()` holds, checking now and after every `changed` of the client.
 *
 * @param {OllamaProxyClient} client - the client
 * @param {Function} predicate - condition over the client's state
 * @param {string} what - for the timeout message
 * @returns {Promise} resolves when it holds
 */
function waitUntil(client, predicate, what) {
    if (predicate())
        return Promise.resolve();
    return waitFor(client, 'changed', () => predicate(), what);
}

/**
 * Wait for `client.available` to become `value`.
 *
 * @param {OllamaProxyClient} client - the client
 * @param {boolean} value - wanted availability
 * @returns {Promise} resolves when reached
 */
function waitAvailable(client, value) {
    if (client.available === value)
        return Promise.resolve();
    return waitFor(client, 'notify::available', () => client.available === value,
        `available = ${value}`);
}

/**
 * Wait for a changed Efficiency property to reach a value.
 *
 * @param {OllamaProxyClient} client - the client
 * @param {string} getter - client getter, e.g. "mode"
 * @param {*} value - wanted value
 * @returns {Promise} resolves when reached
 */
function waitValue(client, getter, value) {
    return waitUntil(client, () => client[getter] === value, `${getter} = ${value}`);
}

/**
 * A client on the session bus, built from the XML file.
 *
 * @param {string} xmlPath - path of the interface XML
 * @returns {Promise<OllamaProxyClient>} the client
 */
async function newClient(xmlPath) {
    const xml = await loadInterfaceXml(Gio.File.new_for_path(xmlPath));
    const client = new OllamaProxyClient();
    await client.init(xml);
    return client;
}

const scenarios = {
    // every property the extension shows, read from the proxies' caches
    async read(xmlPath) {
        const xml = await loadInterfaceXml(Gio.File.new_for_path(xmlPath));
        const infos = parseInterfaces(xml);
        check(INTERFACES.every(name => infos.has(name)), `XML has ${INTERFACES.join(', ')}`);

        const client = new OllamaProxyClient();
        await client.init(xml);
        check(client.available, `service has an owner (${client.owner})`);
        check(client.mode === 'balanced', `Mode = ${client.mode}`);
        check(client.effectiveMode === 'balanced', `EffectiveMode = ${client.effectiveMode}`);
        const ids = client.modes.map(m => m.id);
        check(ids.join() === MODE_IDS.join(), `Modes ids = ${ids}`);
        check(client.modes.every(m => m.label && m.icon && typeof m.description === 'string'),
            'every mode has a label, an icon and a description');
        check(Array.isArray(client.holds) && client.holds.length === 0, 'no holds');
        check(Array.isArray(client.degraded), `Degraded = [${client.degraded}]`);

        const backends = client.backends;
        const health = Object.fromEntries(backends.map(b => [b.id, b.health]));
        check(backends.length === 2, `two backends: ${JSON.stringify(health)}`);
        // the driver configures "sim0" (a simulated backend) and "gone0" (nothing listening)
        await waitUntil(client, () => {
            const h = Object.fromEntries(client.backends.map(b => [b.id, b.health]));
            return h.sim0 === 'healthy' && h.gone0 === 'down';
        }, 'backend health').catch(() => null);
        const settled = Object.fromEntries(client.backends.map(b => [b.id, b.health]));
        check(settled.sim0 === 'healthy' && settled.gone0 === 'down',
            `backend health ${JSON.stringify(settled)}`);
        check(client.degraded.every(code => typeof code === 'string' && code.length > 0),
            'degraded codes are non-empty strings');

        check(client.queueDepth === 0, `QueueDepth = ${client.queueDepth}`);
        check(client.inFlight === 0, `InFlight = ${client.inFlight}`);
        check(client.paused === false, `Paused = ${client.paused}`);
        check(['ac', 'battery', 'unknown'].includes(client.powerSource),
            `PowerSource = ${client.powerSource}`);
        check(typeof client.onBattery === 'boolean', `OnBattery = ${client.onBattery}`);
        check(client.batteryPercent === null || client.batteryPercent <= 100,
            `BatteryPercent = ${client.batteryPercent}`);
        check(client.hottestTemperature === null || client.hottestTemperature > -1,
            `HottestTemperature = ${client.hottestTemperature} (${client.hottestDevice})`);
        client.destroy();
    },

    // a write goes to the service; the cache follows its PropertiesChanged and ModeChanged
    async 'set-mode'(xmlPath) {
        const client = await newClient(xmlPath);
        const modeChanged = waitFor(client, 'mode-changed', () => true, 'ModeChanged');
        const changed = waitFor(client, 'changed',
            (c, iface, names) => iface === 'Efficiency' && names.includes('Mode'),
            'PropertiesChanged(Mode)');
        await client.setMode('efficiency');
        const [, , names] = await changed;
        check(client.mode === 'efficiency', `Mode = ${client.mode} after setMode`);
        check(names.includes('EffectiveMode'), `changed names ${names}`);
        await waitValue(client, 'effectiveMode', 'efficiency');
        check(client.effectiveMode === 'efficiency', `EffectiveMode = ${client.effectiveMode}`);
        const [, oldMode, newMode, reason] = await modeChanged;
        check(oldMode === 'balanced' && newMode === 'efficiency',
            `ModeChanged(${oldMode}, ${newMode}, ${reason})`);

        // the service's aliases and case-insensitivity; the cache shows the canonical id
        await client.setMode('Ultra Efficiency');
        await waitValue(client, 'mode', 'ultra-efficiency');
        check(client.mode === 'ultra-efficiency', `alias accepted, Mode = ${client.mode}`);

        // an unknown id is refused with the contract's error name; the cache stays
        try {
            await client.setMode('turbo');
            check(false, 'setMode(turbo) should fail');
        } catch (e) {
            const name = Gio.DBusError.get_remote_error(e);
            check(name === 'ie.fio.OllamaProxy.Error.InvalidMode', `error name ${name}`);
            check(e.message.includes('performance'), 'error message lists the valid ids');
        }
        check(client.mode === 'ultra-efficiency', `Mode still ${client.mode} after a refused write`);
        client.destroy();
    },

    // another client (busctl) changes the mode: the change arrives as signals, not by polling
    async changes(xmlPath) {
        const client = await newClient(xmlPath);
        const modeChanged = waitFor(client, 'mode-changed', () => true, 'ModeChanged');
        const seen = [];
        const id = client.connect('changed', (c, iface, names) => seen.push([iface, names]));
        step('set-mode quiet');
        await waitValue(client, 'mode', 'quiet');
        check(client.mode === 'quiet', `Mode = ${client.mode} after busctl`);
        const [, oldMode, newMode] = await modeChanged;
        check(newMode === 'quiet', `ModeChanged(${oldMode}, ${newMode})`);
        check(seen.some(([iface, names]) => iface === 'Efficiency' && names.includes('Mode')),
            'announced by PropertiesChanged');

        step('set-mode auto');
        await waitValue(client, 'mode', 'auto');
        check(client.mode === 'auto', 'Mode = auto');
        check(client.effectiveMode !== 'auto' && MODE_IDS.includes(client.effectiveMode),
            `EffectiveMode resolves auto: ${client.effectiveMode}`);
        client.disconnect(id);
        client.destroy();
    },

    // the service goes away and comes back: available follows, the cache empties and refills
    async restart(xmlPath) {
        const client = await newClient(xmlPath);
        check(client.available, 'available while the service runs');
        await client.setMode('performance');
        await waitValue(client, 'mode', 'performance');

        step('stop-service');
        await waitAvailable(client, false);
        check(!client.available, 'not available once the service stopped');
        check(client.owner === null, 'no owner');
        check(client.mode === null && client.modes.length === 0 && client.backends.length === 0,
            'cached properties are gone');

        const refilled = waitFor(client, 'changed',
            () => client.mode !== null && client.modes.length > 0, 'properties after restart');
        step('start-service');
        await waitAvailable(client, true);
        await refilled;
        check(client.available, `available again (${client.owner})`);
        check(client.mode === 'performance', `Mode = ${client.mode} (persisted by the service)`);
        check(client.modes.length === MODE_IDS.length, 'Modes reloaded');
        await waitUntil(client, () => client.backends.length === 2, 'Backends').catch(() => null);
        check(client.backends.length === 2, 'Backends reloaded');

        // the proxies still work after the owner changed
        await client.setMode('balanced');
        await waitValue(client, 'mode', 'balanced');
        check(client.mode === 'balanced', 'setMode works against the new owner');
        client.destroy();
    },

    // the client starts before the service: nothing fails, it becomes available later
    async 'late-start'(xmlPath) {
        const client = await newClient(xmlPath);
        check(!client.available, 'not available without a service');
        check(client.mode === null && client.effectiveMode === null, 'no values without a service');
        check(client.degraded.length === 0 && client.holds.length === 0, 'empty lists');
        try {
            await client.setMode('efficiency');
            check(false, 'setMode without a service should fail');
        } catch (e) {
            check(e instanceof GLib.Error, `setMode without a service fails: ${e.message}`);
        }
        step('start-service');
        await waitAvailable(client, true);
        await waitValue(client, 'mode', 'balanced');
        check(client.available && client.mode === 'balanced', 'available once the service started');
        client.destroy();
    },

    // destroy() disconnects: no more emissions afterwards
    async destroy(xmlPath) {
        const client = await newClient(xmlPath);
        let emitted = 0;
        client.connect('changed', () => emitted++);
        client.destroy();
        step('set-mode efficiency');
        // a second client sees the change, so the first had every chance to see it too
        const witness = await newClient(xmlPath);
        await waitValue(witness, 'mode', 'efficiency');
        check(emitted === 0, `no emissions after destroy (${emitted})`);
        check(client.mode === null, 'a destroyed client reads nothing');
        witness.destroy();
    },
};

const [xmlPath, scenario] = System.programArgs;
const loop = new GLib.MainLoop(null, false);
if (!scenarios[scenario]) {
    printerr(`usage: gjs -m client_test.js XML_FILE {${Object.keys(scenarios).join('|')}}`);
    System.exit(2);
}
scenarios[scenario](xmlPath).catch(e => {
    check(false, `exception: ${e.message}\n${e.stack}`);
}).finally(() => loop.quit());
loop.run();
print(`# ${checks} checks, ${failures} failed`);
System.exit(failures || !checks ? 1 : 0);
