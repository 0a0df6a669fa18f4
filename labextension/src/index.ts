/**
 * jupyterhub-dataaccess:plugin — the "Data" panel in the left sidebar, dataset pages and the
 * service's approvals/admin pages in the main area, the palette's "Data: ..." commands, settings
 * (refresh interval, notifications) and translatable strings.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Clipboard, ICommandPalette, InputDialog, WidgetTracker } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { api } from './api';
import { CommandIDs, PALETTE_CATEGORY } from './commands';
import { createDatasetPage, DatasetPage } from './datasetpage';
import { DOMAIN } from './i18n';
import { IMe, isAdmin, isReviewer, ServicePageName } from './model';
import { NotificationWatch } from './notifications';
import { askForAccess, DataAccessPanel, loadIntoNotebook, notify, PANEL_ID } from './panel';
import { DEFAULT_POLL_INTERVAL_MS, IPanelContext } from './polled';
import { createServicePage, ServicePage, servicePagePath } from './servicepage';

const PLUGIN_ID = 'jupyterhub-dataaccess:plugin';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Browse datasets, request access, open dataset pages and the review pages, load data into notebooks.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer, ICommandPalette, ISettingRegistry, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    settingRegistry: ISettingRegistry | null,
    translator: ITranslator | null
  ): void => {
    const trans = (translator ?? nullTranslator).load(DOMAIN);
    const { commands, shell } = app;
    let context: IPanelContext = {
      trans,
      pollIntervalMs: DEFAULT_POLL_INTERVAL_MS,
      notifications: true
    };
    let me: IMe | null = null;
    const refreshMe = async (): Promise<IMe | null> => {
      try {
        me = await api.me();
      } catch {
        // the panel shows why; the commands stay as they were
      }
      commands.notifyCommandChanged();
      return me;
    };

    const pageActions = {
      askForAccess: (dataset: Parameters<typeof askForAccess>[0]) => askForAccess(dataset, trans),
      loadIntoNotebook: (datasetId: string) => loadIntoNotebook(app, notebooks, datasetId),
      copy: (text: string) => {
        Clipboard.copyToSystem(text);
        notify('info', trans.__('Copied to the clipboard'));
      },
      notify
    };

    // Dataset pages and service pages: tracked, so a reload reopens them where they were.
    const datasetPages = new WidgetTracker<DatasetPage>({
      namespace: 'jupyterhub-dataaccess-dataset'
    });
    const servicePages = new WidgetTracker<ServicePage>({
      namespace: 'jupyterhub-dataaccess-page'
    });

    const panel: DataAccessPanel = new DataAccessPanel(
      {
        ...pageActions,
        isVisible: () => panel.isVisible,
        openDataset: id => void commands.execute(CommandIDs.openDataset, { id }),
        openPage: page => void commands.execute(CommandIDs.openPage, { page })
      },
      () => context
    );
    shell.add(panel, 'left', { rank: 200 });

    commands.addCommand(CommandIDs.openDataset, {
      label: trans.__('Data: Open dataset page'),
      execute: async args => {
        const id = String(args.id ?? '');
        if (!id) {
          return null;
        }
        let page = datasetPages.find(widget => widget.content.datasetId === id);
        if (!page) {
          page = createDatasetPage(id, pageActions, () => context);
          await datasetPages.add(page);
          shell.add(page, 'main');
        }
        shell.activateById(page.id);
        return page;
      }
    });

    commands.addCommand(CommandIDs.openPage, {
      label: args =>
        args.page === 'admin'
          ? trans.__('Data: Open admin workspace')
          : trans.__('Data: Open approvals'),
      execute: async args => {
        const name: ServicePageName = args.page === 'admin' ? 'admin' : 'approvals';
        let page = servicePages.find(widget => widget.pageName === name);
        if (!page) {
          page = createServicePage(name, servicePagePath(name, me ?? (await refreshMe())), trans);
          await servicePages.add(page);
          shell.add(page, 'main');
        }
        shell.activateById(page.id);
        return page;
      }
    });

    commands.addCommand(CommandIDs.openApprovals, {
      label: trans.__('Data: Open approvals'),
      caption: trans.__('The approvals inbox: requests waiting for my decision'),
      isEnabled: () => isReviewer(me),
      execute: () => commands.execute(CommandIDs.openPage, { page: 'approvals' })
    });

    commands.addCommand(CommandIDs.openAdmin, {
      label: trans.__('Data: Open admin workspace'),
      caption: trans.__('Grants and the audit, with filters and export'),
      isEnabled: () => isAdmin(me),
      execute: () => commands.execute(CommandIDs.openPage, { page: 'admin' })
    });

    commands.addCommand(CommandIDs.search, {
      label: trans.__('Data: Search datasets'),
      caption: trans.__('Open the Data panel with the cursor in its search box'),
      execute: args => {
        shell.activateById(PANEL_ID);
        return panel.search(String(args.text ?? ''));
      }
    });

    commands.addCommand(CommandIDs.load, {
      label: trans.__('Data: Load dataset into notebook'),
      caption: trans.__('Insert and run da.load(...) for a dataset I have access to'),
      execute: async args => {
        let id = args.id ? String(args.id) : '';
        if (!id) {
          const granted = await api.datasets({ status: 'granted', limit: 200 });
          if (granted.items.length === 0) {
            notify(
              'info',
              trans.__('You have access to no dataset yet: ask for one in the Data panel.')
            );
            return;
          }
          const choice = await InputDialog.getItem({
            title: trans.__('Load dataset into notebook'),
            label: trans.__('Dataset'),
            items: granted.items.map(dataset => dataset.id),
            okLabel: trans.__('Load')
          });
          if (!choice.button.accept || !choice.value) {
            return;
          }
          id = choice.value;
        }
        await loadIntoNotebook(app, notebooks, id);
      }
    });

    if (palette) {
      for (const command of [
        CommandIDs.search,
        CommandIDs.load,
        CommandIDs.openApprovals,
        CommandIDs.openAdmin
      ]) {
        palette.addItem({ command, category: PALETTE_CATEGORY });
      }
    }

    if (restorer) {
      restorer.add(panel, PANEL_ID);
      void restorer.restore(datasetPages, {
        command: CommandIDs.openDataset,
        args: widget => ({ id: widget.content.datasetId }),
        name: widget => widget.content.datasetId
      });
      void restorer.restore(servicePages, {
        command: CommandIDs.openPage,
        args: widget => ({ page: widget.pageName }),
        name: widget => widget.pageName
      });
    }

    const watch = new NotificationWatch(api, notify, () => ({
      trans,
      enabled: context.notifications,
      intervalMs: context.pollIntervalMs
    }));

    const rerender = (): void => {
      panel.update();
      datasetPages.forEach(page => page.content.update());
      watch.configure();
    };
    if (settingRegistry) {
      void settingRegistry.load(PLUGIN_ID).then(
        settings => {
          const apply = (): void => {
            context = {
              trans,
              pollIntervalMs: Number(settings.get('pollIntervalSeconds').composite) * 1000,
              notifications: settings.get('notifications').composite !== false
            };
            rerender();
          };
          apply();
          settings.changed.connect(apply);
        },
        error => console.warn('jupyterhub-dataaccess: settings not loaded', error)
      );
    }
    void refreshMe();
  }
};

export default plugin;
