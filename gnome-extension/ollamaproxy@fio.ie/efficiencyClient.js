// SPDX-License-Identifier: MIT
//
// D-Bus client for ie.fio.OllamaProxy. It imports only gi:// modules, so the GNOME Shell
// extension and a plain `gjs -m` test use the very same file.
//
// The proxies are built from the contract XML (dbus/ie.fio.OllamaProxy.xml, shipped beside
// this file as ie.fio.OllamaProxy.xml): nothing here restates a member or a signature.
// Gio.DBusProxy.makeProxyWrapper() only takes the first interface of an XML document and ours
// holds five, so the file is parsed once into a Gio.DBusNodeInfo and every proxy is made the
// way makeProxyWrapper makes one (a Gio.DBusProxy with g-interface-info, then init_async); gjs
// adds the same generated members (`SetModeAsync()`, property accessors) to it.
//
// State is read from the proxies' property caches, which GDBus keeps current from
// PropertiesChanged; nothing here polls. Writes are method calls, and the caches change only
// when the service announces the new value.

import Gio from 'gi://Gio';
import GLib from 'gi://GLib';
import GObject from 'gi://GObject';

export const BUS_NAME = 'ie.fio.OllamaProxy';
export const OBJECT_PATH = '/ie/fio/OllamaProxy';
/** The contract's file name beside this module (and in dbus/ of the project). */
export const INTERFACE_FILE = 'ie.fio.OllamaProxy.xml';
const INTERFACE_PREFIX = 'ie.fio.OllamaProxy.';
/** The interfaces this client follows, by the last part of their name. */
export const INTERFACES = ['Efficiency', 'Backends', 'Routing', 'Thermal', 'SystemState'];

/**
 * Read the interface XML without blocking the caller's main loop.
 *
 * @param {Gio.File} file - the bundled ie.fio.OllamaProxy.xml
 * @param {Gio.Cancellable} [cancellable] - cancels the read
 * @returns {Promise<string>} the XML text
 */
export function loadInterfaceXml(file, cancellable = null) {
    return new Promise((resolve, reject) => {
        file.load_contents_async(cancellable, (source, result) => {
            try {
                const [, contents] = source.load_contents_finish(result);
                resolve(new TextDecoder().decode(contents));
            } catch (e) {
                reject(e);
            }
        });
    });
}

/**
 * Parse the contract and pick out the interfaces this client needs.
 *
 * @param {string} xml - the introspection XML
 * @returns {Map<string, Gio.DBusInterfaceInfo>} interface infos keyed by short name
 */
export function parseInterfaces(xml) {
    const node = Gio.DBusNodeInfo.new_for_xml(xml);
    const infos = new Map();
    for (const shortName of INTERFACES) {
        const info = node.lookup_interface(`${INTERFACE_PREFIX}${shortName}`);
        if (!info)
            throw new Error(`${INTERFACE_PREFIX}${shortName} is missing from the interface XML`);
        infos.set(shortName, info);
    }
    return infos;
}

/**
 * Make one proxy for one interface, as makeProxyWrapper's wrapper does.
 *
 * @param {Gio.DBusInterfaceInfo} info - the interface
 * @param {Gio.DBusConnection} bus - the session bus
 * @param {Gio.Cancellable} cancellable - cancels the initialisation
 * @returns {Promise<Gio.DBusProxy>} the proxy, its property cache loaded when the name has an owner
 */
async function makeProxy(info, bus, cancellable) {
    const proxy = new Gio.DBusProxy({
        g_connection: bus,
        g_interface_name: info.name,
        g_interface_info: info,
        g_name: BUS_NAME,
        g_object_path: OBJECT_PATH,
        // The shell must not start the service (its user unit does); ask for invalidated
        // properties so that the cache never holds a stale value.
        g_flags: Gio.DBusProxyFlags.DO_NOT_AUTO_START |
            Gio.DBusProxyFlags.GET_INVALIDATED_PROPERTIES,
    });
    await proxy.init_async(GLib.PRIORITY_DEFAULT, cancellable);
    return proxy;
}

/**
 * A number the contract sends as -1 when it is not known.
 *
 * @param {?number} value - the property value
 * @returns {?number} the value, or null when unknown
 */
function known(value) {
    return typeof value === 'number' && value >= 0 ? value : null;
}

export const OllamaProxyClient = GObject.registerClass({
    Properties: {
        'available': GObject.ParamSpec.boolean('available', '', '',
            GObject.ParamFlags.READABLE, false),
    },
    Signals: {
        // (interface short name, names of the properties that changed or were invalidated)
        'changed': {param_types: [GObject.TYPE_STRING, GObject.TYPE_JSOBJECT]},
        // the ModeChanged signal: (old, new, reason)
        'mode-changed': {
            param_types: [GObject.TYPE_STRING, GObject.TYPE_STRING, GObject.TYPE_STRING],
        },
    },
}, class OllamaProxyClient extends GObject.Object {
    /**
     * Build the proxies; resolves once their property caches are loaded. A service that is not
     * running is not an error: `available` stays false until it starts.
     *
     * @param {string} xml - the interface XML (see loadInterfaceXml)
     * @param {object} [options] - where to connect
     * @param {Gio.DBusConnection} [options.bus] - defaults to the session bus
     * @param {Gio.Cancellable} [options.cancellable] - cancels the initialisation
     */
    async init(xml, {bus = Gio.DBus.session, cancellable = null} = {}) {
        const infos = parseInterfaces(xml);
        const names = [...infos.keys()];
        const proxies = await Promise.all(
            names.map(name => makeProxy(infos.get(name), bus, cancellable)));

        this._proxies = new Map();
        this._handlers = [];
        names.forEach((name, i) => {
            const proxy = proxies[i];
            this._proxies.set(name, proxy);
            this._handlers.push([proxy, proxy.connect('g-properties-changed',
                (p, changed, invalidated) => this.emit('changed', name,
                    [...Object.keys(changed.deepUnpack()), ...invalidated]))]);
            this._handlers.push([proxy, proxy.connect('notify::g-name-owner',
                () => this._onOwnerChanged(name))]);
        });
        const efficiency = this._proxies.get('Efficiency');
        this._handlers.push([efficiency, efficiency.connect('g-signal',
            (p, sender, signalName, parameters) => {
                if (signalName === 'ModeChanged')
                    this.emit('mode-changed', ...parameters.deepUnpack());
            })]);
        this._syncAvailable();
    }

    _onOwnerChanged(name) {
        if (name === 'Efficiency')
            this._syncAvailable();
        // a new owner's properties were loaded just before this notification
        const properties = this._proxies.get(name).g_interface_info.properties;
        this.emit('changed', name, properties.map(p => p.name));
    }

    _syncAvailable() {
        const available = this._proxies.get('Efficiency').g_name_owner !== null;
        if (available === this._available)
            return;
        this._available = available;
        this.notify('available');
    }

    /** @type {boolean} the service owns its bus name */
    get available() {
        return this._available ?? false;
    }

    /** @type {?string} the unique bus name of the service, null when it is not running */
    get owner() {
        return this._proxies?.get('Efficiency').g_name_owner ?? null;
    }

    /**
     * A cached property as plain JavaScript values.
     *
     * @param {string} iface - interface short name
     * @param {string} name - property name
     * @returns {*} the value, or null when the service is not running
     */
    lookup(iface, name) {
        // One service, five proxies: each hears of the owner leaving on its own, so a proxy
        // whose notification is still on its way must not show the old owner's values.
        if (!this.available)
            return null;
        const value = this._proxies?.get(iface).get_cached_property(name);
        return value ? value.recursiveUnpack() : null;
    }

    /** @type {?string} the user's choice (may be "auto") */
    get mode() {
        return this.lookup('Efficiency', 'Mode');
    }

    /** @type {?string} the mode in force */
    get effectiveMode() {
        return this.lookup('Efficiency', 'EffectiveMode');
    }

    /** @type {Array<{id: string, label: string, description: string, icon: string}>} */
    get modes() {
        return (this.lookup('Efficiency', 'Modes') ?? []).filter(m => typeof m.id === 'string');
    }

    /** @type {Array<object>} holds in force (cookie, mode, reason, app_id) */
    get holds() {
        return this.lookup('Efficiency', 'Holds') ?? [];
    }

    /** @type {string[]} reason codes, empty when all is well */
    get degraded() {
        return (this.lookup('Efficiency', 'Degraded') ?? '').split(',').filter(c => c);
    }

    /** @type {Array<object>} one plain object per backend (id, health, ...) */
    get backends() {
        return this.lookup('Backends', 'Backends') ?? [];
    }

    /** @type {?number} requests waiting for a slot */
    get queueDepth() {
        return this.lookup('Routing', 'QueueDepth');
    }

    /** @type {?number} requests running */
    get inFlight() {
        return this.lookup('Routing', 'InFlight');
    }

    /** @type {?boolean} new work is held */
    get paused() {
        return this.lookup('Routing', 'Paused');
    }

    /** @type {?string} label of the hottest device, null when none is known */
    get hottestDevice() {
        return this.lookup('Thermal', 'HottestDevice') || null;
    }

    /** @type {?number} its temperature in °C, null when unknown */
    get hottestTemperature() {
        return known(this.lookup('Thermal', 'HottestTemperature'));
    }

    /** @type {?boolean} running on battery */
    get onBattery() {
        return this.lookup('SystemState', 'OnBattery');
    }

    /** @type {?number} battery level 0-100, null without a battery */
    get batteryPercent() {
        return known(this.lookup('SystemState', 'BatteryPercent'));
    }

    /** @type {?string} "ac", "battery" or "unknown" */
    get powerSource() {
        return this.lookup('SystemState', 'PowerSource');
    }

    /**
     * Ask the service to change the user's mode. The cached Mode changes only when the
     * service announces it (PropertiesChanged).
     *
     * @param {string} mode - a mode id
     * @returns {Promise} resolves when the service accepted it; rejects with the D-Bus error
     */
    async setMode(mode) {
        await this._proxies.get('Efficiency').SetModeAsync(mode);
    }

    /** Disconnect from the proxies; the client is unusable afterwards. */
    destroy() {
        for (const [proxy, id] of this._handlers ?? [])
            proxy.disconnect(id);
        this._handlers = [];
        this._proxies = null;
    }
});
