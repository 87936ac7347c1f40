// SPDX-License-Identifier: MIT
//
// "AI Efficiency" in Quick Settings: the efficiency mode of ollamaproxy (ie.fio.OllamaProxy on
// the session bus), shaped like GNOME's own Power Mode toggle (js/ui/status/powerProfiles.js).
//
// - The toggle is hidden while the service's bus name has no owner and appears when it gets one.
// - Everything shown is derived from the D-Bus client's property caches in _sync(), which runs
//   on PropertiesChanged and on owner changes only; there is no timer. The mode menu is rebuilt
//   (_syncModes) only when the Modes property changes or the service comes back.
// - Choosing a mode calls SetMode on the service; the check mark moves when the service announces
//   the new Mode, never before.

import Clutter from 'gi://Clutter';
import Gio from 'gi://Gio';
import GObject from 'gi://GObject';
import Pango from 'gi://Pango';
import St from 'gi://St';

import * as Main from 'resource:///org/gnome/shell/ui/main.js';
import * as PopupMenu from 'resource:///org/gnome/shell/ui/popupMenu.js';
import {Extension, gettext as _} from 'resource:///org/gnome/shell/extensions/extension.js';
import {QuickMenuToggle, SystemIndicator} from 'resource:///org/gnome/shell/ui/quickSettings.js';

import {INTERFACE_FILE, OllamaProxyClient, loadInterfaceXml} from './efficiencyClient.js';

// Display data for the mode ids this extension knows (names are gettext msgids, translated
// when shown). Ids it does not know are shown with the label and icon the service sends.
const MODE_PARAMS = {
    'performance': {name: 'Performance', iconName: 'power-profile-performance-symbolic'},
    'balanced': {name: 'Balanced', iconName: 'power-profile-balanced-symbolic'},
    'efficiency': {name: 'Efficiency', iconName: 'power-profile-power-saver-symbolic'},
    'quiet': {name: 'Quiet', iconName: 'weather-clear-night-symbolic'},
    'ultra-efficiency': {name: 'Ultra Efficiency', iconName: 'battery-level-10-symbolic'},
    'auto': {name: 'Auto', iconName: 'system-run-symbolic'},
};
const FALLBACK_ICON = 'gnome-power-manager-symbolic';
const DEFAULT_LAST_MODE = 'efficiency';

// Short texts for the Degraded reason codes; others read as the generic text.
const DEGRADED_TEXT = {
    'thermal': 'Thermal limit',
    'power-budget': 'Power budget reached',
    'telemetry-stale': 'Telemetry stale',
    'paused': 'Paused',
    'device-removed': 'Device removed',
    'no-backends': 'No backend available',
    'on-battery': 'On battery',
};
const DEGRADED_GENERIC = 'Limited';

// The mode the toggle switches back to from Balanced, like GNOME's last-selected-power-profile
// (kept for the session, across disable/enable; a plain string, no object outlives disable()).
let lastMode = DEFAULT_LAST_MODE;

/**
 * @param {?number} value - a number or null
 * @returns {string} the value rounded, for display
 */
function rounded(value) {
    return `${Math.round(value)}`;
}

const FooterItem = GObject.registerClass(
class FooterItem extends PopupMenu.PopupBaseMenuItem {
    _init() {
        super._init({reactive: false, can_focus: false});
        this._label = new St.Label({
            style_class: 'ollamaproxy-footer',
            x_expand: true,
            y_align: Clutter.ActorAlign.CENTER,
        });
        this._label.clutter_text.set({line_wrap: true, ellipsize: Pango.EllipsizeMode.NONE});
        this.add_child(this._label);
    }

    set text(text) {
        this._label.text = text;
    }

    get text() {
        return this._label.text;
    }
});

const EfficiencyToggle = GObject.registerClass(
class EfficiencyToggle extends QuickMenuToggle {
    _init(interfaceFile) {
        super._init({
            title: _('AI Efficiency'),
            iconName: MODE_PARAMS.balanced.iconName,
            visible: false,
        });

        this._client = null;
        this._modeItems = new Map();
        this._cancellable = new Gio.Cancellable();

        this.connect('clicked', () => this._onClicked());
        this.connect('destroy', () => this._onDestroy());

        this._modeSection = new PopupMenu.PopupMenuSection();
        this.menu.setHeader(MODE_PARAMS.balanced.iconName, _('AI Efficiency'));
        this.menu.addMenuItem(this._modeSection);
        this.menu.addMenuItem(new PopupMenu.PopupSeparatorMenuItem());
        this._footer = new FooterItem();
        this.menu.addMenuItem(this._footer);

        this._connect(interfaceFile).catch(e => {
            if (!e.matches?.(Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED))
                console.error(`ollamaproxy: cannot follow ie.fio.OllamaProxy: ${e.message}`);
        });
        this._sync();
    }

    async _connect(interfaceFile) {
        const xml = await loadInterfaceXml(interfaceFile, this._cancellable);
        const client = new OllamaProxyClient();
        await client.init(xml, {cancellable: this._cancellable});
        if (this._cancellable.is_cancelled()) {
            client.destroy();
            return;
        }
        this._client = client;
        client.connectObject(
            'changed', (c, iface, names) => {
                if (iface === 'Efficiency' && names.includes('Modes'))
                    this._syncModes();
                this._sync();
            },
            'notify::available', () => {
                this._syncModes();
                this._sync();
            },
            this);
        this._syncModes();
        this._sync();
    }

    _modeParams(id) {
        const known = MODE_PARAMS[id];
        if (known)
            return {name: _(known.name), iconName: known.iconName};
        const info = this._modeInfo?.get(id);
        return {name: info?.label || id || _('Unknown'), iconName: info?.icon || FALLBACK_ICON};
    }

    _syncModes() {
        this._modeSection.removeAll();
        this._modeItems.clear();
        const modes = this._client?.modes ?? [];
        this._modeInfo = new Map(modes.map(m => [m.id, m]));

        for (const {id} of modes) {
            const {name, iconName} = this._modeParams(id);
            const item = new PopupMenu.PopupImageMenuItem(name, iconName);
            item.connect('activate', () => this._setMode(id));
            this._modeItems.set(id, item);
            this._modeSection.addMenuItem(item);
        }
        this.menuEnabled = this._modeItems.size > 2;
    }

    _sync() {
        this.visible = this._client?.available ?? false;
        if (!this.visible) {
            this.checked = false;
            return;
        }

        const {mode, effectiveMode, degraded} = this._client;
        for (const [id, item] of this._modeItems) {
            item.setOrnament(id === mode
                ? PopupMenu.Ornament.CHECK
                : PopupMenu.Ornament.NONE);
        }

        const {name, iconName} = this._modeParams(effectiveMode ?? mode);
        const reasons = degraded.map(code => _(DEGRADED_TEXT[code] ?? DEGRADED_GENERIC));
        let subtitle = name;
        if (reasons.length > 0)
            subtitle += ` · ${reasons[0]}${reasons.length > 1 ? ` +${reasons.length - 1}` : ''}`;
        this.set({subtitle, iconName});
        this.menu.setHeader(iconName, _('AI Efficiency'), this._headerSubtitle(degraded));

        this.checked = !!mode && mode !== 'balanced';
        if (this.checked && mode !== lastMode)
            lastMode = mode;

        this._footer.text = this._footerText();
    }

    _headerSubtitle(degraded) {
        const parts = [];
        if (this._client.mode === 'auto')
            parts.push(_('Chosen automatically'));
        const holds = this._client.holds;
        if (holds.length > 0)
            parts.push(`${_('Held by')} ${[...new Set(holds.map(h => h.app_id || h.reason))].join(', ')}`);
        // codes this extension does not know are shown as the service sent them
        parts.push(...degraded.map(code => DEGRADED_TEXT[code] ? _(DEGRADED_TEXT[code]) : code));
        return parts.join(' · ');
    }

    _footerText() {
        const c = this._client;
        const lines = [];

        const battery = c.batteryPercent;
        let power;
        if (c.powerSource === 'battery' || c.onBattery)
            power = _('On battery');
        else if (c.powerSource === 'ac')
            power = _('On AC power');
        else
            power = _('Power source unknown');
        lines.push(battery === null ? power : `${power} · ${_('Battery')} ${rounded(battery)} %`);

        const temperature = c.hottestTemperature;
        lines.push(temperature === null
            ? _('No temperature readings')
            : `${_('Hottest')}: ${c.hottestDevice ?? '?'} ${rounded(temperature)} °C`);

        const backends = c.backends;
        const healthy = backends.filter(b => b.health === 'healthy').length;
        lines.push(`${_('Backends healthy')}: ${healthy}/${backends.length} · ${_('Queue')}: ${c.queueDepth ?? 0}`);
        return lines.join('\n');
    }

    _setMode(mode) {
        this._client?.setMode(mode).catch(e => {
            console.warn(`ollamaproxy: SetMode(${mode}) failed: ${e.message}`);
        });
    }

    _onClicked() {
        this._setMode(this.checked ? 'balanced' : lastMode);
    }

    _onDestroy() {
        this._cancellable.cancel();
        this._client?.destroy();
        this._client = null;
        // the shell adds a toggle's menu to the Quick Settings overlay but does not destroy it
        // with the toggle (45-49): without this, every disable() would leave one behind
        this.menu.destroy();
    }
});

const EfficiencyIndicator = GObject.registerClass(
class EfficiencyIndicator extends SystemIndicator {
    _init(interfaceFile) {
        super._init();

        // the panel icon shows while the mode is not Balanced, with the icon of the mode in force
        this._indicator = this._addIndicator();
        const toggle = new EfficiencyToggle(interfaceFile);
        toggle.bind_property('checked', this._indicator, 'visible',
            GObject.BindingFlags.SYNC_CREATE);
        toggle.bind_property('icon-name', this._indicator, 'icon-name',
            GObject.BindingFlags.SYNC_CREATE);
        this.quickSettingsItems.push(toggle);
    }
});

export default class OllamaProxyExtension extends Extension {
    enable() {
        this._indicator = new EfficiencyIndicator(this.dir.get_child(INTERFACE_FILE));
        Main.panel.statusArea.quickSettings.addExternalIndicator(this._indicator);
    }

    disable() {
        this._indicator.quickSettingsItems.forEach(item => item.destroy());
        this._indicator.destroy();
        this._indicator = null;
    }
}
